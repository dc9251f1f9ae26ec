"""Which payload model and topic belong to each event type."""

from __future__ import annotations

from pydantic import BaseModel

from handshake_shared.events import inventory as inv
from handshake_shared.events import order as o
from handshake_shared.events import payment as pay
from handshake_shared.events import provider as prov
from handshake_shared.events.topics import INVENTORY_EVENTS, ORDER_EVENTS, PAYMENT_EVENTS, PROVIDER_EVENTS

EVENT_MODELS: dict[str, type[BaseModel]] = {
    "order.placed": o.OrderPlaced,
    "order.payment_requested": o.OrderPaymentRequested,
    "order.payment_pending": o.OrderPaymentPending,
    "order.paid": o.OrderPaid,
    "order.fulfillment_pending": o.OrderFulfillmentPending,
    "order.fulfilled": o.OrderStateChanged,
    "order.cancelled": o.OrderStateChanged,
    "order.expired": o.OrderStateChanged,
    "order.refund_requested": o.OrderRefundRequested,
    "order.refunded": o.OrderRefunded,
    "order.partially_refunded": o.OrderRefunded,
    "order.payment_authorized": o.OrderPaymentAuthorized,
    "order.capture_requested": o.OrderCaptureRequested,
    "order.needs_review": o.OrderStateChanged,
    "inventory.reserved": inv.InventoryReserved,
    "inventory.rejected": inv.InventoryRejected,
    "inventory.committed": inv.InventoryCommitted,
    "inventory.commit_failed": inv.InventoryCommitFailed,
    "inventory.restocked": inv.InventoryRestocked,
    "inventory.released": inv.InventoryReleased,
    "inventory.reservation_expired": inv.InventoryReleased,
    "payment.intent_created": pay.PaymentIntentCreated,
    "payment.authorized": pay.PaymentSucceeded,
    "payment.succeeded": pay.PaymentSucceeded,
    "payment.failed": pay.PaymentFailed,
    "payment.canceled": pay.PaymentFailed,
    "payment.capture_failed": pay.PaymentFailed,
    "payment.refunded": pay.PaymentRefunded,
    "payment.refund_failed": pay.PaymentRefundFailed,
    "payment.refund_reversed": pay.PaymentRefundReversed,
    "payment.mismatch": pay.PaymentMismatch,
    "payment.disputed": pay.PaymentDisputed,
    "provider.stripe.event": prov.ProviderStripeEvent,
}

TOPIC_OF: dict[str, str] = {
    t: {"order": ORDER_EVENTS, "inventory": INVENTORY_EVENTS, "payment": PAYMENT_EVENTS, "provider": PROVIDER_EVENTS}[
        t.split(".", 1)[0]
    ]
    for t in EVENT_MODELS
}


def payload_model(event_type: str) -> type[BaseModel]:
    try:
        return EVENT_MODELS[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}") from None
