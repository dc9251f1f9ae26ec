"""What a Stripe PaymentIntent object says, reduced to the facts the attempt lifecycle needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IntentFacts:
    amount: int | None
    amount_capturable: int | None
    currency: str | None
    status: str | None
    failure_code: str | None
    failure_message: str | None
    attempt_id: str | None
    order_id: str | None


def intent_facts(obj: dict[str, Any]) -> IntentFacts:
    # amount_received is what was actually taken (a partial capture takes less than amount);
    # localstripe does not send it, so fall back to amount
    amount = obj.get("amount_received") or obj.get("amount")
    capturable = obj.get("amount_capturable") or obj.get("amount")
    currency = obj.get("currency")
    error = obj.get("last_payment_error") or {}
    metadata = obj.get("metadata") or {}
    return IntentFacts(
        amount=int(amount) if amount is not None else None,
        amount_capturable=int(capturable) if capturable is not None else None,
        currency=currency.upper() if isinstance(currency, str) else None,
        status=obj.get("status"),
        # decline_code is the more precise reason when the code is the generic card_declined
        failure_code=error.get("decline_code") or error.get("code") or obj.get("cancellation_reason"),
        failure_message=error.get("message"),
        attempt_id=metadata.get("attempt_id"),
        order_id=metadata.get("order_id"),
    )


def captured_amount(obj: dict[str, Any], requested: int | None = None) -> int:
    """What a captured intent took: amount_received when the provider says it (Stripe does), else what we
    asked to capture, else the intent's amount (localstripe reports neither)."""
    received = obj.get("amount_received")
    if received:
        return int(received)
    if requested is not None:
        return min(int(requested), int(obj["amount"]))
    return int(obj["amount"])
