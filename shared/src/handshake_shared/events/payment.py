"""Facts the payment service publishes on payment.events.v1."""

from __future__ import annotations

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
    order_id: str
    attempt_id: str
    payment_intent_id: str
    failure_code: str | None = None
    failure_message: str | None = None
