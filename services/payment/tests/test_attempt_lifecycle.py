"""The attempt lifecycle table and the provider-fact reduction: pure, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_payment.domain.attempts import ATTEMPT_LIFECYCLE, HOLDS_PAYMENT, PROVIDER_EVENT_STATES, provider_target
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.intents import captured_amount, intent_facts
from handshake_shared.statemachine import InvalidTransition

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


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
        # manual capture: held, then captured, refused at capture, or released
        (A.REQUIRES_PAYMENT, A.AUTHORIZED),
        (A.AUTHORIZED, A.SUCCEEDED),
        (A.AUTHORIZED, A.CAPTURE_FAILED),
        (A.AUTHORIZED, A.CANCELED),
        # a capture made elsewhere before our cancel of the refused one landed is still money taken
        (A.CAPTURE_FAILED, A.SUCCEEDED),
        # an order cancelled before the intent existed
        (A.CREATING, A.CANCELED),
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
        (A.AUTHORIZED, A.AUTHORIZED),  # a second payment.authorized
        (A.AUTHORIZED, A.FAILED),  # a held authorization is captured or released, never declined
        (A.SUCCEEDED, A.AUTHORIZED),  # a stale authorization never un-captures
        (A.CANCELED, A.AUTHORIZED),
        (A.CAPTURE_FAILED, A.AUTHORIZED),  # the hold was released
        (A.CAPTURE_FAILED, A.CAPTURE_FAILED),
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
    assert set(HOLDS_PAYMENT) == {A.AUTHORIZED, A.SUCCEEDED}


# what the attempt's own handlers add to provider facts: our capture and its refusal
OUR_FACTS = {"capture": A.SUCCEEDED, "capture_refused": A.CAPTURE_FAILED}


@given(st.lists(st.sampled_from(sorted(PROVIDER_EVENT_STATES) + sorted(OUR_FACTS)), max_size=14))
def test_any_order_of_facts_announces_at_most_one_authorization_and_one_success(facts: list[str]) -> None:
    """Stripe may send, resend and reorder events, and our capture may race them: applying only what the table
    allows yields at most one authorization and one success, never an authorization after the success, and
    nothing moves an attempt after it succeeded or was canceled."""
    state = A.REQUIRES_PAYMENT
    announced: list[A] = []
    for fact in facts:
        target = PROVIDER_EVENT_STATES.get(fact) or OUR_FACTS[fact]
        if ATTEMPT_LIFECYCLE.can(state, target):
            before, state = state, target
            assert before not in (A.SUCCEEDED, A.CANCELED)
            if target in HOLDS_PAYMENT:
                announced.append(target)
    assert announced.count(A.SUCCEEDED) <= 1
    assert announced.count(A.AUTHORIZED) <= 1
    assert announced in ([], [A.AUTHORIZED], [A.SUCCEEDED], [A.AUTHORIZED, A.SUCCEEDED])


@pytest.mark.parametrize(
    ("event_type", "status", "target"),
    [
        ("payment_intent.amount_capturable_updated", "requires_capture", A.AUTHORIZED),
        # any payment_intent event that shows the hold reports it (emulators, created/updated events)
        ("payment_intent.created", "requires_capture", A.AUTHORIZED),
        ("payment_intent.succeeded", "succeeded", A.SUCCEEDED),
        ("payment_intent.canceled", "canceled", A.CANCELED),
        ("payment_intent.created", "requires_payment_method", None),
        ("charge.succeeded", "requires_capture", None),
    ],
)
def test_provider_events_map_to_attempt_states(event_type: str, status: str, target: A | None) -> None:
    assert provider_target(event_type, status) == target


def test_captured_amount_is_what_the_provider_took() -> None:
    # Stripe says it
    assert captured_amount({"id": "pi_1", "amount": 10000, "amount_received": 6000}, 9000) == 6000
    # localstripe does not: what we asked to capture, never more than the intent
    assert captured_amount({"id": "pi_1", "amount": 10000}, 6000) == 6000
    assert captured_amount({"id": "pi_1", "amount": 10000}, 12000) == 10000
    assert captured_amount({"id": "pi_1", "amount": 10000}) == 10000


def test_intent_facts_take_what_was_received_in_upper_case_currency() -> None:
    facts = intent_facts(
        {
            "id": "pi_1",
            "amount": 5000,
            "amount_received": 4000,
            "currency": "eur",
            "metadata": {"order_id": "o-1", "attempt_id": "a-1"},
        }
    )
    assert (facts.amount, facts.currency, facts.order_id, facts.attempt_id) == (4000, "EUR", "o-1", "a-1")
    # localstripe sends no amount_received
    assert intent_facts({"amount": 5000, "currency": "eur"}).amount == 5000


def test_intent_facts_prefer_the_precise_decline_reason() -> None:
    declined = intent_facts(
        {
            "amount": 100,
            "currency": "usd",
            "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds", "message": "No."},
        }
    )
    assert (declined.failure_code, declined.failure_message) == ("insufficient_funds", "No.")
    canceled = intent_facts({"amount": 100, "currency": "usd", "cancellation_reason": "abandoned"})
    assert canceled.failure_code == "abandoned"
