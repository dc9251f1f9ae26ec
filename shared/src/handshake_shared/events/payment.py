"""Facts the payment service publishes on payment.events.v1."""

from __future__ import annotations

from pydantic import Field

from handshake_shared.events.base import Payload


class PaymentIntentCreated(Payload):
    order_id: str
    attempt_id: str
    payment_intent_id: str
    amount: int
    currency: str


class PaymentSucceeded(Payload):
    order_id: str
    attempt_id: str
    payment_intent_id: str
    amount: int
    currency: str


class PaymentFailed(Payload):
    """payment.failed / payment.canceled / payment.capture_failed."""

    order_id: str
    attempt_id: str
    payment_intent_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None


class PaymentRefunded(Payload):
    order_id: str
    refund_id: str = Field(description="the order's refund id, or payment's own for an automatic refund")
    attempt_id: str
    payment_intent_id: str
    provider_refund_id: str
    amount: int
    currency: str
    reason: str
    automatic: bool = Field(default=False, description="payment refunded on its own (a second capture)")


class PaymentRefundFailed(Payload):
    order_id: str
    refund_id: str
    amount: int
    currency: str
    reason: str
