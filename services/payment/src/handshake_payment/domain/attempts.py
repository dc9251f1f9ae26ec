"""The payment attempt lifecycle, declared as a table. Nothing changes an attempt's state except through it.

One attempt = one payment request from the order service = at most one Stripe PaymentIntent."""

from __future__ import annotations

from enum import StrEnum

from handshake_shared.statemachine import TransitionTable


class AttemptState(StrEnum):
    CREATING = "creating"  # row committed, PaymentIntent not yet known to be created
    REQUIRES_PAYMENT = "requires_payment"  # intent exists; the customer has the client secret
    PROCESSING = "processing"  # the provider is settling an asynchronous payment method
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


A = AttemptState

ATTEMPT_LIFECYCLE = TransitionTable[AttemptState](
    "payment_attempt",
    {
        # money is truth: a provider success is recorded whatever we believed before, except after a
        # cancel, which Stripe makes final for the intent
        A.CREATING: {A.REQUIRES_PAYMENT, A.PROCESSING, A.SUCCEEDED, A.FAILED, A.CANCELED},
        A.REQUIRES_PAYMENT: {A.PROCESSING, A.SUCCEEDED, A.FAILED, A.CANCELED},
        A.PROCESSING: {A.SUCCEEDED, A.FAILED, A.CANCELED},
        # Stripe returns a declined intent to requires_payment_method: the customer may try another card
        # on the same intent, so a failed attempt can still process or succeed
        A.FAILED: {A.PROCESSING, A.SUCCEEDED, A.CANCELED},
        # refunds and disputes are facts about a charge, kept apart from the attempt lifecycle
        A.SUCCEEDED: set(),
        A.CANCELED: set(),
    },
)  # fmt: skip

# Stripe PaymentIntent event type -> the attempt state it reports
PROVIDER_EVENT_STATES: dict[str, AttemptState] = {
    "payment_intent.processing": A.PROCESSING,
    "payment_intent.succeeded": A.SUCCEEDED,
    "payment_intent.payment_failed": A.FAILED,
    "payment_intent.canceled": A.CANCELED,
}
