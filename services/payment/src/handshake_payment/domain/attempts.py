"""The payment attempt lifecycle, declared as a table. Nothing changes an attempt's state except through it.

One attempt = one payment request from the order service = at most one Stripe PaymentIntent."""

from __future__ import annotations

from enum import StrEnum

from handshake_shared.statemachine import TransitionTable


class AttemptState(StrEnum):
    CREATING = "creating"  # row committed, PaymentIntent not yet known to be created
    REQUIRES_PAYMENT = "requires_payment"  # intent exists; the customer has the client secret
    PROCESSING = "processing"  # the provider is settling an asynchronous payment method
    AUTHORIZED = "authorized"  # manual capture: funds held (intent requires_capture), nothing taken yet
    SUCCEEDED = "succeeded"  # money taken
    CAPTURE_FAILED = "capture_failed"  # the provider refused the capture; the authorization was released
    FAILED = "failed"
    CANCELED = "canceled"


A = AttemptState

ATTEMPT_LIFECYCLE = TransitionTable[AttemptState](
    "payment_attempt",
    {
        # money is truth: a provider success is recorded whatever we believed before, except after a
        # cancel, which Stripe makes final for the intent
        A.CREATING: {A.REQUIRES_PAYMENT, A.PROCESSING, A.AUTHORIZED, A.SUCCEEDED, A.FAILED, A.CANCELED},
        A.REQUIRES_PAYMENT: {A.PROCESSING, A.AUTHORIZED, A.SUCCEEDED, A.FAILED, A.CANCELED},
        A.PROCESSING: {A.AUTHORIZED, A.SUCCEEDED, A.FAILED, A.CANCELED},
        # Stripe returns a declined intent to requires_payment_method: the customer may try another card
        # on the same intent, so a failed attempt can still process, be authorized or succeed
        A.FAILED: {A.PROCESSING, A.AUTHORIZED, A.SUCCEEDED, A.CANCELED},
        # a held authorization ends captured, refused at capture, or released (order cancelled, expiry)
        A.AUTHORIZED: {A.SUCCEEDED, A.CAPTURE_FAILED, A.CANCELED},
        # the capture was refused and the authorization cancelled; a capture made elsewhere (dashboard)
        # before our cancel landed is still money taken
        A.CAPTURE_FAILED: {A.SUCCEEDED},
        # refunds and disputes are facts about a charge, kept apart from the attempt lifecycle
        A.SUCCEEDED: set(),
        A.CANCELED: set(),
    },
)

# the states in which an attempt holds the order's money (taken or held); at most one attempt per order
# may be in them without being marked a duplicate (a partial unique index says so too)
HOLDS_PAYMENT = (A.AUTHORIZED, A.SUCCEEDED)

# Stripe PaymentIntent event type -> the attempt state it reports
PROVIDER_EVENT_STATES: dict[str, AttemptState] = {
    "payment_intent.processing": A.PROCESSING,
    "payment_intent.amount_capturable_updated": A.AUTHORIZED,
    "payment_intent.succeeded": A.SUCCEEDED,
    "payment_intent.payment_failed": A.FAILED,
    "payment_intent.canceled": A.CANCELED,
}

# PaymentIntent statuses Stripe still lets us cancel: nothing has been taken
OPEN_INTENT_STATUSES = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}
)


def provider_target(event_type: str, status: str | None) -> AttemptState | None:
    """The attempt state a provider event reports. Any payment_intent event whose object is
    requires_capture reports an authorization: Stripe sends amount_capturable_updated for it, but an
    emulator or a created/updated event may be the first to show it."""
    if event_type.startswith("payment_intent.") and status == "requires_capture":
        return A.AUTHORIZED
    return PROVIDER_EVENT_STATES.get(event_type)
