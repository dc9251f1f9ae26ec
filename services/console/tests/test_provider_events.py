"""The order page's line for each provider event says what payment did with it, read from payment's own
attempt history: webhook-ingest only knows it received and forwarded the event."""

from __future__ import annotations

import pytest

from handshake_console.domain.provider_events import outcome_of, processing_outcomes

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

ATTEMPTS = [
    {
        "attempt_id": "a1",
        "transitions": [
            {"from": None, "to": "creating", "provider_event_id": None},
            {"from": "creating", "to": "requires_payment", "provider_event_id": None},
            {"from": "requires_payment", "to": "failed", "provider_event_id": "evt_declined"},
        ],
    },
    {
        "attempt_id": "a2",
        "transitions": [
            {"from": "requires_payment", "to": "succeeded", "provider_event_id": "evt_paid"},
            {"from": "succeeded", "to": "partially_refunded", "provider_event_id": "evt_refund"},
        ],
    },
]


def test_each_event_shows_the_moves_it_caused_and_a_repeat_shows_that_it_changed_nothing() -> None:
    outcomes = processing_outcomes(ATTEMPTS)
    assert outcomes == {
        "evt_declined": "applied: requires_payment → failed",
        "evt_paid": "applied: requires_payment → succeeded",
        "evt_refund": "applied: succeeded → partially_refunded",
    }
    assert outcome_of({"provider_event_id": "evt_paid", "forwarding": "published"}, outcomes).startswith("applied")
    # a replay of a succeeded event, or an event type that moves no attempt: forwarded, no move named after it
    assert outcome_of({"provider_event_id": "evt_charge", "forwarding": "published"}, outcomes).startswith("no change")
    # still in webhook-ingest's outbox: payment has not had it yet
    assert outcome_of({"provider_event_id": "evt_new", "forwarding": "pending"}, outcomes) == "not yet at payment"


def test_an_event_that_moved_two_attempts_lists_both_moves_in_order() -> None:
    attempts = [
        {"transitions": [{"from": "authorized", "to": "canceled", "provider_event_id": "evt_x"}]},
        {"transitions": [{"from": "requires_payment", "to": "authorized", "provider_event_id": "evt_x"}]},
    ]
    assert processing_outcomes(attempts) == {"evt_x": "applied: authorized → canceled, requires_payment → authorized"}
