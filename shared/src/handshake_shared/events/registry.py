"""Which payload model and topic belong to each event type: built from the payload classes, each of which
carries its own type and topic, so a type can never be listed with another type's model or topic."""

from __future__ import annotations

from handshake_shared.events import inventory as inv
from handshake_shared.events import order as o
from handshake_shared.events import payment as pay
from handshake_shared.events import provider as prov
from handshake_shared.events.base import Payload
from handshake_shared.events.topics import SAGA_TOPICS

_MODELS: tuple[type[Payload], ...] = (
    *o.ORDER_EVENT_MODELS,
    inv.InventoryReserved,
    inv.InventoryRejected,
    inv.InventoryCommitted,
    inv.InventoryCommitFailed,
    inv.InventoryRestocked,
    inv.InventoryReleased,
    inv.InventoryReservationExpired,
    pay.PaymentIntentCreated,
    pay.PaymentAuthorized,
    pay.PaymentSucceeded,
    pay.PaymentFailed,
    pay.PaymentCanceled,
    pay.PaymentCaptureFailed,
    pay.PaymentRefunded,
    pay.PaymentRefundFailed,
    pay.PaymentRefundReversed,
    pay.PaymentMismatch,
    pay.PaymentDisputed,
    prov.ProviderStripeEvent,
)


def _by_type(models: tuple[type[Payload], ...]) -> dict[str, type[Payload]]:
    registry: dict[str, type[Payload]] = {}
    for model in models:
        if not model.event_type or model.event_type in registry:
            raise RuntimeError(f"{model.__name__}: every payload class needs an event type of its own")
        if model.event_topic not in SAGA_TOPICS:
            raise RuntimeError(f"{model.__name__}: every payload class names the topic it is published on")
        registry[model.event_type] = model
    return registry


EVENT_MODELS: dict[str, type[Payload]] = _by_type(_MODELS)

TOPIC_OF: dict[str, str] = {t: model.event_topic for t, model in EVENT_MODELS.items()}


def payload_model(event_type: str) -> type[Payload]:
    try:
        return EVENT_MODELS[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}") from None
