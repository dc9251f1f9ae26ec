"""The attempt lifecycle table and the provider-fact reduction: pure, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_payment.domain.attempts import ATTEMPT_LIFECYCLE, PROVIDER_EVENT_STATES
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.intents import intent_facts
from handshake_shared.statemachine import InvalidTransition


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (A.CREATING, A.REQUIRES_PAYMENT),
        (A.REQUIRES_PAYMENT, A.PROCESSING),
        (A.REQUIRES_PAYMENT, A.SUCCEEDED),
        (A.REQUIRES_PAYMENT, A.FAILED),
        (A.REQUIRES_PAYMENT, A.CANCELED),
        (A.PROCESSING, A.SUCCEEDED),
        # a declined card leaves the intent open for another card: money arriving later is still recorded
        (A.FAILED, A.SUCCEEDED),
    ],
)
def test_the_payment_path_is_allowed(current: A, target: A) -> None:
    assert ATTEMPT_LIFECYCLE.can(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (A.SUCCEEDED, A.SUCCEEDED),  # a duplicate success must not announce a second payment
        (A.SUCCEEDED, A.FAILED),  # a late decline never un-pays an order
        (A.SUCCEEDED, A.CANCELED),
        (A.CANCELED, A.SUCCEEDED),  # Stripe cannot charge a canceled intent
        (A.FAILED, A.FAILED),
        (A.REQUIRES_PAYMENT, A.CREATING),
        (A.REQUIRES_PAYMENT, A.REQUIRES_PAYMENT),  # a second intent_created for one attempt
    ],
)
def test_transitions_outside_the_table_are_refused(current: A, target: A) -> None:
    assert not ATTEMPT_LIFECYCLE.can(current, target)
    with pytest.raises(InvalidTransition):
        ATTEMPT_LIFECYCLE.check(current, target)


def test_success_and_cancel_are_terminal_and_every_state_is_declared() -> None:
    assert ATTEMPT_LIFECYCLE.is_terminal(A.SUCCEEDED)
    assert ATTEMPT_LIFECYCLE.is_terminal(A.CANCELED)
    assert ATTEMPT_LIFECYCLE.states() == set(A)
    assert set(PROVIDER_EVENT_STATES.values()) <= set(A)


@given(st.lists(st.sampled_from(sorted(PROVIDER_EVENT_STATES)), max_size=12))
def test_any_order_of_provider_facts_announces_at_most_one_success(facts: list[str]) -> None:
    """Stripe may send, resend and reorder events: applying only what the table allows yields at most one
    success, and nothing moves an attempt after it succeeded or was canceled."""
    state = A.REQUIRES_PAYMENT
    successes = 0
    for fact in facts:
        target = PROVIDER_EVENT_STATES[fact]
        if ATTEMPT_LIFECYCLE.can(state, target):
            before, state = state, target
            assert before not in (A.SUCCEEDED, A.CANCELED)
            successes += target == A.SUCCEEDED
    assert successes <= 1


def test_intent_facts_take_what_was_received_in_upper_case_currency() -> None:
    facts = intent_facts(
        {"id": "pi_1", "amount": 5000, "amount_received": 4000, "currency": "eur",
         "metadata": {"order_id": "o-1", "attempt_id": "a-1"}}
    )  # fmt: skip
    assert (facts.amount, facts.currency, facts.order_id, facts.attempt_id) == (4000, "EUR", "o-1", "a-1")
    # localstripe sends no amount_received
    assert intent_facts({"amount": 5000, "currency": "eur"}).amount == 5000


def test_intent_facts_prefer_the_precise_decline_reason() -> None:
    declined = intent_facts(
        {"amount": 100, "currency": "usd",
         "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds", "message": "No."}}
    )  # fmt: skip
    assert (declined.failure_code, declined.failure_message) == ("insufficient_funds", "No.")
    canceled = intent_facts({"amount": 100, "currency": "usd", "cancellation_reason": "abandoned"})
    assert canceled.failure_code == "abandoned"
