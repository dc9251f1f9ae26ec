"""Facts the order service publishes on order.events.v1 (public topic).

The topic is the order's complete history: every applied state change is announced by exactly one event,
named after the state it leads to (`order.<state>`; the creation, into `draft`, is `order.placed`), whose
`transition` says from where, to where and why;
events that change no state (`order.payment_requested`, `order.payment_session_opened`,
`order.capture_requested`, `order.refund_requested`, a refund confirmed while the order stays where it is) have no `transition`. A subscriber rebuilds an order's
state from the topic alone: the `to_state` of the last `transition` it saw for the order."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from handshake_shared.events.base import Id, Line, Payload
from handshake_shared.events.topics import ORDER_EVENTS

OrderStateName = Literal[
    "draft",
    "payment_pending",
    "payment_authorized",
    "paid",
    "fulfillment_pending",
    "partially_fulfilled",
    "fulfilled",
    "payment_failed",
    "expired",
    "cancelled",
    "cancelled_with_refund",
    "capture_failed",
    "partially_refunded",
    "refunded",
    "needs_review",
    "closed",
]
ORDER_STATES: tuple[str, ...] = get_args(OrderStateName)


class Transition(Payload):
    """One applied change of the order's state: the same from, to and reason as the order's audit timeline."""

    from_state: OrderStateName | None = Field(description="null only for the order's creation")
    to_state: OrderStateName
    reason: str


class OrderEvent(Payload):
    """Base of every order.* payload."""

    event_topic = ORDER_EVENTS
    order_id: Id
    transition: Transition | None = Field(
        default=None,
        description="present when this event announces a change of the order's state (exactly one event per "
        "applied transition, in the order they were applied); absent when the state stays as it was",
    )


class OrderPlaced(OrderEvent):
    """The order is priced and stored (`draft`). Sent again without `transition` for an order that never
    heard back from inventory."""

    event_type = "order.placed"
    currency: str
    total: int = Field(description="minor units")
    lines: list[Line]
    hold_seconds: int | None = Field(
        default=None,
        ge=1,
        description="how long the stock is held for this order until its payment session is opened (a guest's "
        "short hold); absent: the full checkout hold. Inventory never holds longer than its own maximum",
    )


class OrderPaymentSessionOpened(OrderEvent):
    """The customer opened the payment session (received the client secret): from now on the stock is held
    for the full checkout time, counted from the placement. Sent once, only for an order placed with a short
    hold; no state change."""

    event_type = "order.payment_session_opened"
    hold_seconds: int = Field(ge=1, description="the full hold, in seconds from the order's placement")


class OrderPaymentRequested(OrderEvent):
    """The order asks payment for an attempt over its total; no state change."""

    event_type = "order.payment_requested"
    request_id: Id = Field(description="one per payment attempt the order asks for")
    amount: int
    currency: str


class OrderPaymentPending(OrderEvent):
    """A PaymentIntent exists for the attempt; the customer can pay."""

    event_type = "order.payment_pending"
    attempt_id: Id
    payment_intent_id: str


class OrderPaid(OrderEvent):
    """The money is taken."""

    event_type = "order.paid"
    attempt_id: Id
    payment_intent_id: str
    amount: int
    currency: str


class OrderFulfillmentPending(OrderEvent):
    """Paid and the stock committed: ready to ship."""

    event_type = "order.fulfillment_pending"


class OrderStateChanged(OrderEvent):
    """Base of the lifecycle events without a richer payload (cancelled, expired, fulfilled, ...)."""

    from_state: str
    to_state: str
    reason: str


class OrderPaymentFailed(OrderStateChanged):
    """The payment attempt was declined; the customer may start a new one."""

    event_type = "order.payment_failed"


class OrderExpired(OrderStateChanged):
    """The stock reservation lapsed before payment."""

    event_type = "order.expired"


class OrderCancelled(OrderStateChanged):
    """Cancelled before money was taken (by the customer, out of stock, a failed capture, or staff)."""

    event_type = "order.cancelled"


class OrderCaptureFailed(OrderStateChanged):
    """The provider refused to capture the authorized money."""

    event_type = "order.capture_failed"


class OrderCancelledWithRefund(OrderStateChanged):
    """Paid, but the stock could not be committed: the whole amount is refunded (order.refund_requested)."""

    event_type = "order.cancelled_with_refund"


class OrderPartiallyFulfilled(OrderStateChanged):
    """Part of the order has shipped (set by staff)."""

    event_type = "order.partially_fulfilled"


class OrderFulfilled(OrderStateChanged):
    """Everything has shipped (set by staff)."""

    event_type = "order.fulfilled"


class OrderNeedsReview(OrderStateChanged):
    """Money and order disagree, or a fact could not be applied: a person decides."""

    event_type = "order.needs_review"


class OrderClosed(OrderStateChanged):
    """Nothing more happens to the order."""

    event_type = "order.closed"


class OrderPaymentAuthorized(OrderEvent):
    """Manual capture: funds are held; inventory commits the reservation before we capture."""

    event_type = "order.payment_authorized"
    attempt_id: Id
    payment_intent_id: str
    amount: int
    currency: str


class OrderCaptureRequested(OrderEvent):
    """Manual capture: the stock is committed, so payment takes the authorized money; no state change."""

    event_type = "order.capture_requested"
    attempt_id: Id
    payment_intent_id: str
    amount: int
    currency: str


class OrderRefundRequested(OrderEvent):
    """Staff, or the order itself, asked payment to refund an amount; no state change until it is confirmed."""

    event_type = "order.refund_requested"
    refund_id: Id = Field(description="our id; the provider idempotency key derives from it")
    amount: int = Field(gt=0)
    currency: str
    reason: str
    restock: bool = False
    requested_by: str


class OrderRefundConfirmed(OrderEvent):
    """The fields of order.refunded and order.partially_refunded: a refund the provider confirmed. No event
    type of its own: which of the two it is says whether anything of the capture is left."""

    refund_id: Id
    amount: int
    currency: str
    refunded_total: int = Field(description="all confirmed refunds of the order so far")
    restock: bool = False


class OrderRefunded(OrderRefundConfirmed):
    """A refund the provider confirmed that leaves nothing of the capture (for an order cancelled with refund or
    under review: the refund is counted and the state stays)."""

    event_type = "order.refunded"


class OrderPartiallyRefunded(OrderRefundConfirmed):
    """A refund the provider confirmed that leaves part of the capture (under review: the state stays)."""

    event_type = "order.partially_refunded"


# the events that announce a move to their state and need nothing but the transition itself
STATE_CHANGE_EVENTS: dict[str, type[OrderStateChanged]] = {
    cls.event_type: cls
    for cls in (
        OrderPaymentFailed,
        OrderExpired,
        OrderCancelled,
        OrderCaptureFailed,
        OrderCancelledWithRefund,
        OrderPartiallyFulfilled,
        OrderFulfilled,
        OrderNeedsReview,
        OrderClosed,
    )
}

ORDER_EVENT_MODELS: tuple[type[OrderEvent], ...] = (
    OrderPlaced,
    OrderPaymentRequested,
    OrderPaymentSessionOpened,
    OrderPaymentPending,
    OrderPaymentAuthorized,
    OrderCaptureRequested,
    OrderPaid,
    OrderFulfillmentPending,
    *STATE_CHANGE_EVENTS.values(),
    OrderRefundRequested,
    OrderRefunded,
    OrderPartiallyRefunded,
)


def state_change(target: str, *, order_id: str, from_state: str, reason: str) -> OrderStateChanged:
    """The payload announcing a move to `target`; KeyError for a state whose event carries more than that."""
    cls = STATE_CHANGE_EVENTS[f"order.{target}"]
    return cls(order_id=order_id, from_state=from_state, to_state=target, reason=reason)
