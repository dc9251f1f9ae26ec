"""The order page's first line: where the money and the goods are, and what happens next, in plain words.

"Charged 57.43 EUR · fulfilment pending · nothing refunded · next: ship the order"

Four parts, always in this order: money taken, where the order is, money given back, the next step (who or
what moves it on). Built only from the order service's own figures (captured, refunded, refund pending); the
console never works money out from events of its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handshake_console.domain.money import format_money

# where the order is, as a person would say it
STAGE = {
    "draft": "reserving stock",
    "payment_pending": "waiting for the customer to pay",
    "payment_authorized": "payment authorised, not captured",
    "paid": "committing stock",
    "fulfillment_pending": "fulfilment pending",
    "partially_fulfilled": "partly shipped",
    "fulfilled": "shipped",
    "payment_failed": "payment failed",
    "expired": "expired before payment",
    "cancelled": "cancelled",
    "cancelled_with_refund": "cancelled after payment",
    "capture_failed": "capture failed",
    "partially_refunded": "partly refunded",
    "refunded": "refunded",
    "needs_review": "needs review",
    "closed": "closed",
}

# what moves the order on from here
NEXT = {
    "draft": "inventory reserves the lines or rejects the order",
    "payment_pending": "the customer pays, or the reservation expires",
    "payment_authorized": "payment captures the authorised amount",
    "paid": "inventory commits the reserved stock",
    "fulfillment_pending": "ship the order",
    "partially_fulfilled": "ship the rest",
    "fulfilled": "nothing; the order is complete",
    "payment_failed": "the customer may pay again with another card",
    "expired": "nothing; the stock went back",
    "cancelled": "nothing",
    "cancelled_with_refund": "nothing, once the refund has gone through",
    "capture_failed": "reconcile with the provider, then decide by hand",
    "partially_refunded": "ship or refund the rest",
    "refunded": "nothing; all money is back with the customer",
    "needs_review": "finance closes the review",
    "closed": "nothing",
}


def summary_line(order: Mapping[str, Any]) -> str:
    state = str(order.get("state") or "unknown")
    currency = order.get("currency")
    total = _amount(order.get("total"))
    captured = _amount(order.get("captured_amount"))
    refunded = _amount(order.get("refunded_amount"))
    pending = _amount(order.get("refund_pending_amount"))

    if captured > 0:
        money = f"Charged {format_money(captured, currency)}"
        if total and captured != total:
            money += f" of {format_money(total, currency)}"
    elif state == "payment_authorized":
        money = f"Authorised {format_money(total, currency)}, not charged yet"
    elif state in ("draft", "payment_pending"):
        money = f"Not charged yet ({format_money(total, currency)} due)"
    else:
        money = "Nothing charged"

    if refunded == 0 and pending == 0:
        given_back = "nothing refunded"
    elif refunded == 0:
        given_back = f"refund of {format_money(pending, currency)} pending"
    elif captured and refunded >= captured:
        given_back = f"refunded in full ({format_money(refunded, currency)})"
    else:
        given_back = f"refunded {format_money(refunded, currency)}"
        if captured:
            given_back += f" of {format_money(captured, currency)}"
    if refunded and pending:
        given_back += f", {format_money(pending, currency)} more pending"

    stage = STAGE.get(state, state.replace("_", " "))
    # money still held on an order that is over is the one thing a person must not miss
    if state in ("cancelled", "expired", "payment_failed", "closed") and captured > refunded + pending:
        upcoming = f"refund the {format_money(captured - refunded - pending, currency)} still held"
    elif pending and state not in ("needs_review", "capture_failed"):
        upcoming = "the provider confirms the pending refund"
    else:
        upcoming = NEXT.get(state, "see the timeline")
    return f"{money} · {stage} · {given_back} · next: {upcoming}"


def _amount(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
