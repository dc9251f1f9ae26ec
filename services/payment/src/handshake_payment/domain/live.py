"""Whether what Stripe says about a PaymentIntent right now agrees with the attempt we stored. Pure, no I/O.

Staff compare the two when an order looks stuck: a disagreement is something reconciliation would repair (a
webhook we never got) or flag (another amount or currency). The rule reads the provider's status the way
reconciliation does, so "disagrees" here means "a run would change or flag this attempt"."""

from __future__ import annotations

from handshake_payment.domain.attempts import AttemptState

A = AttemptState

# nothing happened at the provider yet, or the customer is still at it (3-D Secure, a retry after a decline)
_OPEN = frozenset({A.CREATING, A.REQUIRES_PAYMENT, A.FAILED})

# PaymentIntent status -> the attempt states that are consistent with it
_AGREEING: dict[str, frozenset[AttemptState]] = {
    "requires_payment_method": _OPEN,
    "requires_confirmation": _OPEN,
    "requires_action": _OPEN,
    "processing": frozenset({A.PROCESSING}),
    "requires_capture": frozenset({A.AUTHORIZED}),
    "succeeded": frozenset({A.SUCCEEDED}),
    # a refused capture is followed by cancelling the authorization, so Stripe shows it canceled
    "canceled": frozenset({A.CANCELED, A.CAPTURE_FAILED}),
}


def live_states(live_status: str | None, *, payment_error: bool) -> frozenset[AttemptState]:
    """The attempt states consistent with the provider's status. A declined intent goes back to
    requires_payment_method with last_payment_error set: that reads as failed, as reconciliation reads it."""
    if live_status == "requires_payment_method" and payment_error:
        return frozenset({A.FAILED})
    return _AGREEING.get(live_status or "", frozenset())


def provider_live_agrees(
    state: str,
    amount: int,
    currency: str,
    *,
    live_status: str | None,
    live_amount: int | None,
    live_currency: str | None,
    payment_error: bool = False,
) -> bool:
    """True when the stored attempt (state, amount, currency) says what the provider says now. An unknown
    state or status never agrees: a person should look."""
    try:
        stored = AttemptState(state)
    except ValueError:
        return False
    if stored not in live_states(live_status, payment_error=payment_error):
        return False
    return live_amount == amount and (live_currency or "").upper() == currency.upper()
