"""The refund lifecycle and the guard that keeps refunds within the capture: pure, no I/O."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_payment.domain.refunds import (
    CURRENCY_MISMATCH,
    EXCEEDS_CAPTURED,
    NO_CAPTURED_PAYMENT,
    REFUND_LIFECYCLE,
    automatic_refund_id,
    refusal_reason,
)
from handshake_payment.domain.refunds import RefundState as R

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


def test_a_refund_ends_once_and_only_the_bank_can_undo_a_success() -> None:
    assert REFUND_LIFECYCLE.can(R.REQUESTED, R.SUCCEEDED)
    assert REFUND_LIFECYCLE.can(R.REQUESTED, R.FAILED)
    # a refund the provider accepted can only fail afterwards (reversed), never go back to being asked for
    assert REFUND_LIFECYCLE.allowed(R.SUCCEEDED) == {R.REVERSED}
    assert REFUND_LIFECYCLE.is_terminal(R.FAILED) and REFUND_LIFECYCLE.is_terminal(R.REVERSED)
    assert not REFUND_LIFECYCLE.can(R.FAILED, R.SUCCEEDED)
    assert REFUND_LIFECYCLE.states() == set(R)


@given(captured=st.integers(1, 10**7), requests=st.lists(st.integers(1, 10**7), max_size=20))
def test_refunds_the_guard_lets_through_never_sum_above_the_capture(captured: int, requests: list[int]) -> None:
    refunded = 0
    for amount in requests:
        refused = refusal_reason(
            captured=captured, captured_currency="EUR", already_refunded=refunded, amount=amount, currency="EUR"
        )
        if refused is None:
            refunded += amount
        else:
            assert refused[0] == EXCEEDS_CAPTURED and refunded + amount > captured
    assert refunded <= captured


def test_the_guard_refuses_what_was_never_captured_or_another_currency() -> None:
    nothing = refusal_reason(captured=None, captured_currency=None, already_refunded=0, amount=100, currency="EUR")
    assert nothing is not None and nothing[0] == NO_CAPTURED_PAYMENT
    other = refusal_reason(captured=1000, captured_currency="EUR", already_refunded=0, amount=100, currency="usd")
    assert other is not None and other[0] == CURRENCY_MISMATCH
    exact = refusal_reason(captured=1000, captured_currency="EUR", already_refunded=400, amount=600, currency="eur")
    assert exact is None


def test_the_automatic_refund_of_an_attempt_always_has_the_same_id() -> None:
    attempt = uuid.uuid4()
    assert automatic_refund_id(attempt) == automatic_refund_id(attempt) != automatic_refund_id(uuid.uuid4())
