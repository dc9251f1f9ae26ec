"""Refund rules: the refund lifecycle and the guard that keeps refunds within what was captured. No I/O."""

from __future__ import annotations

import uuid
from enum import StrEnum

from handshake_shared.statemachine import TransitionTable


class RefundState(StrEnum):
    REQUESTED = "requested"  # row committed; the provider may or may not have refunded yet
    SUCCEEDED = "succeeded"  # the provider accepted the refund (its id is stored)
    FAILED = "failed"  # refused by our guard or by the provider: no money moved
    # accepted by the provider, failed there afterwards (closed card, bank refusal): the money went back to
    # the merchant's balance, the customer did not get it, and it no longer counts against the capture
    REVERSED = "reversed"


R = RefundState

REFUND_LIFECYCLE = TransitionTable[RefundState](
    "refund",
    {R.REQUESTED: {R.SUCCEEDED, R.FAILED}, R.SUCCEEDED: {R.REVERSED}, R.FAILED: set(), R.REVERSED: set()},
)

DUPLICATE_CAPTURE = "duplicate_capture"

# failure codes of refunds our own guard refuses before any provider call
NO_CAPTURED_PAYMENT = "no_captured_payment"
CURRENCY_MISMATCH = "currency_mismatch"
EXCEEDS_CAPTURED = "exceeds_captured"

_AUTOMATIC_NAMESPACE = uuid.UUID("8d2f4e4c-3b7a-5c61-9a52-0f4d1b6e2a10")


def automatic_refund_id(attempt_id: uuid.UUID) -> uuid.UUID:
    """Payment's own refund of a second capture: derived from the attempt, so every redelivery of the
    success that made it a duplicate finds the same refund (row and provider metadata)."""
    return uuid.uuid5(_AUTOMATIC_NAMESPACE, f"duplicate-capture:{attempt_id}")


def refusal_reason(
    *, captured: int | None, captured_currency: str | None, already_refunded: int, amount: int, currency: str
) -> tuple[str, str] | None:
    """Why a refund of amount may not be made against a capture, or None when it may. already_refunded
    counts every refund of the capture that has not failed (requested ones included: they may have
    reached the provider)."""
    if captured is None or captured_currency is None:
        return NO_CAPTURED_PAYMENT, "the order has no captured payment"
    if currency.upper() != captured_currency.upper():
        return CURRENCY_MISMATCH, f"refund in {currency.upper()} of a payment in {captured_currency.upper()}"
    if amount <= 0 or already_refunded + amount > captured:
        left = max(0, captured - already_refunded)
        return EXCEEDS_CAPTURED, f"{amount} exceeds what is left to refund ({left} of {captured} captured)"
    return None
