"""Facts the payment service publishes on payment.events.v1."""

from __future__ import annotations

from pydantic import Field

from handshake_shared.events.base import Id, Payload
from handshake_shared.events.topics import PAYMENT_EVENTS


class PaymentEvent(Payload):
    """Base of every payment.* payload."""

    event_topic = PAYMENT_EVENTS
    order_id: Id


class PaymentIntentCreated(PaymentEvent):
    """The attempt's PaymentIntent exists at the provider."""

    event_type = "payment.intent_created"
    attempt_id: Id
    payment_intent_id: str
    amount: int
    currency: str


class PaymentMoneyHeld(PaymentEvent):
    """The fields of payment.succeeded and payment.authorized: the provider holds the attempt's money, taken or
    only authorized. No event type of its own: each of the two is its own class, so an isinstance check for
    one never matches the other."""

    attempt_id: Id
    payment_intent_id: str
    amount: int
    currency: str


class PaymentAttemptEnded(PaymentEvent):
    """The fields of payment.failed, payment.canceled and payment.capture_failed: the attempt ended without
    its money. No event type of its own."""

    attempt_id: Id
    payment_intent_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None


class PaymentSucceeded(PaymentMoneyHeld):
    """The provider took the attempt's money."""

    event_type = "payment.succeeded"


class PaymentFailed(PaymentAttemptEnded):
    """The attempt was declined, or the provider refused to make its PaymentIntent."""

    event_type = "payment.failed"


class PaymentAuthorized(PaymentMoneyHeld):
    """Manual capture: the provider holds the money; it is taken when the order asks for the capture."""

    event_type = "payment.authorized"


class PaymentCanceled(PaymentAttemptEnded):
    """The attempt's PaymentIntent was cancelled at the provider."""

    event_type = "payment.canceled"


class PaymentCaptureFailed(PaymentAttemptEnded):
    """The provider refused to capture an authorized attempt."""

    event_type = "payment.capture_failed"


class PaymentRefunded(PaymentEvent):
    """The provider confirmed a refund."""

    event_type = "payment.refunded"
    refund_id: Id = Field(description="the order's refund id, or payment's own for an automatic refund")
    attempt_id: Id
    payment_intent_id: str
    provider_refund_id: str
    amount: int
    currency: str
    reason: str
    automatic: bool = Field(default=False, description="payment refunded on its own (a second capture)")


class PaymentRefundReversed(PaymentEvent):
    """A refund the provider had accepted failed afterwards (closed card, bank refusal): the money went back
    to the merchant's balance and the customer did not get it. It no longer counts as refunded."""

    event_type = "payment.refund_reversed"
    refund_id: Id = Field(description="the refund row: the order's refund id, or payment's own")
    attempt_id: Id
    payment_intent_id: str
    provider_refund_id: str
    amount: int
    currency: str
    reason: str = Field(description="the provider's failure_reason, or its status")


class PaymentRefundFailed(PaymentEvent):
    """The provider refused a refund; the money is still held."""

    event_type = "payment.refund_failed"
    refund_id: Id
    amount: int
    currency: str
    reason: str


class PaymentMismatch(PaymentEvent):
    """The provider holds a different amount or currency than the attempt asked for: never fulfil."""

    event_type = "payment.mismatch"
    attempt_id: Id
    payment_intent_id: str
    expected_amount: int
    expected_currency: str
    provider_amount: int
    provider_currency: str
    detected_by: str = Field(description="webhook or reconciliation")
    captured: bool = Field(default=False, description="the provider took this money (not only authorized it)")


class PaymentDisputed(PaymentEvent):
    """The customer disputed the payment with their bank."""

    event_type = "payment.disputed"
    attempt_id: Id
    payment_intent_id: str
    dispute_id: str
    amount: int
    currency: str
    reason: str | None = None
    status: str | None = None
