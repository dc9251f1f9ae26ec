"""Facts the order service publishes on order.events.v1 (public topic)."""

from __future__ import annotations

from pydantic import Field

from handshake_shared.events.base import Line, Payload


class OrderPlaced(Payload):
    order_id: str
    currency: str
    total: int = Field(description="minor units")
    lines: list[Line]


class OrderPaymentRequested(Payload):
    order_id: str
    request_id: str = Field(description="one per payment attempt the order asks for")
    amount: int
    currency: str


class OrderPaymentPending(Payload):
    order_id: str
    attempt_id: str
    payment_intent_id: str


class OrderPaid(Payload):
    order_id: str
    attempt_id: str
    payment_intent_id: str
    amount: int
    currency: str


class OrderFulfillmentPending(Payload):
    order_id: str


class OrderStateChanged(Payload):
    """Carried by every lifecycle event without a richer payload (cancelled, expired, ...)."""

    order_id: str
    from_state: str
    to_state: str
    reason: str


class OrderPaymentAuthorized(Payload):
    """Manual capture: funds are held; inventory commits the reservation before we capture."""

    order_id: str
    attempt_id: str
    payment_intent_id: str
    amount: int
    currency: str


class OrderCaptureRequested(Payload):
    order_id: str
    attempt_id: str
    payment_intent_id: str
    amount: int
    currency: str


class OrderRefundRequested(Payload):
    order_id: str
    refund_id: str = Field(description="our id; the provider idempotency key derives from it")
    amount: int = Field(gt=0)
    currency: str
    reason: str
    restock: bool = False
    requested_by: str


class OrderRefunded(Payload):
    """order.refunded / order.partially_refunded: a refund the provider confirmed."""

    order_id: str
    refund_id: str
    amount: int
    currency: str
    refunded_total: int = Field(description="all confirmed refunds of the order so far")
    restock: bool = False
