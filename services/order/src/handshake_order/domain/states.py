"""The order lifecycle, declared as a table. Nothing changes an order's state except through it."""

from enum import StrEnum

from handshake_shared.statemachine import TransitionTable


class OrderState(StrEnum):
    DRAFT = "draft"
    PAYMENT_PENDING = "payment_pending"
    PAYMENT_AUTHORIZED = "payment_authorized"
    PAID = "paid"
    FULFILLMENT_PENDING = "fulfillment_pending"
    PARTIALLY_FULFILLED = "partially_fulfilled"
    FULFILLED = "fulfilled"
    PAYMENT_FAILED = "payment_failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    CANCELLED_WITH_REFUND = "cancelled_with_refund"
    CAPTURE_FAILED = "capture_failed"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    NEEDS_REVIEW = "needs_review"
    CLOSED = "closed"


S = OrderState

ORDER_LIFECYCLE = TransitionTable[OrderState](
    "order",
    {
        S.DRAFT: {S.PAYMENT_PENDING, S.CANCELLED, S.EXPIRED, S.NEEDS_REVIEW},
        S.PAYMENT_PENDING: {S.PAYMENT_AUTHORIZED, S.PAID, S.PAYMENT_FAILED, S.EXPIRED, S.CANCELLED, S.NEEDS_REVIEW},
        S.PAYMENT_AUTHORIZED: {S.PAID, S.CANCELLED, S.CAPTURE_FAILED, S.NEEDS_REVIEW},
        S.PAID: {S.FULFILLMENT_PENDING, S.REFUNDED, S.PARTIALLY_REFUNDED, S.CANCELLED_WITH_REFUND, S.NEEDS_REVIEW},
        S.FULFILLMENT_PENDING: {
            S.FULFILLED,
            S.PARTIALLY_FULFILLED,
            S.CANCELLED_WITH_REFUND,
            S.REFUNDED,
            S.PARTIALLY_REFUNDED,
            S.NEEDS_REVIEW,
        },
        S.PARTIALLY_FULFILLED: {S.FULFILLED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.NEEDS_REVIEW},
        S.FULFILLED: {S.REFUNDED, S.PARTIALLY_REFUNDED, S.CLOSED, S.NEEDS_REVIEW},
        # money is truth: a payment that lands after a failure, expiry or cancel is still applied
        S.PAYMENT_FAILED: {S.PAYMENT_PENDING, S.PAID, S.CANCELLED, S.EXPIRED, S.NEEDS_REVIEW},
        S.EXPIRED: {S.PAYMENT_PENDING, S.PAID, S.CANCELLED, S.NEEDS_REVIEW},
        S.CANCELLED: {S.PAID, S.NEEDS_REVIEW},
        S.CAPTURE_FAILED: {S.CANCELLED, S.NEEDS_REVIEW},
        # the automatic refund may fail at the provider: the money is still held, a person must see it
        S.CANCELLED_WITH_REFUND: {S.CLOSED, S.NEEDS_REVIEW},
        S.PARTIALLY_REFUNDED: {S.PARTIALLY_REFUNDED, S.REFUNDED, S.CLOSED, S.NEEDS_REVIEW},
        # a refund can fail at the provider after it was confirmed: the customer is owed the money again
        S.REFUNDED: {S.CLOSED, S.NEEDS_REVIEW},
        # a human decides where a flagged order goes; the admin API records who and why
        S.NEEDS_REVIEW: {
            S.PAID,
            S.FULFILLMENT_PENDING,
            S.CANCELLED,
            S.CANCELLED_WITH_REFUND,
            S.REFUNDED,
            S.PARTIALLY_REFUNDED,
            S.CLOSED,
        },
        S.CLOSED: set(),
    },
)
