"""A verified Stripe event read into the fields we store and forward. Pure: no I/O.

No business meaning is given to any event type here; the payment service decides what matters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handshake_shared.events.provider import ProviderStripeEvent, SealedDelivery, scrub
from handshake_webhook_ingest.verification import Rejected


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class StripeEvent:
    provider_event_id: str
    type: str
    api_version: str | None
    livemode: bool
    created: int
    object: dict[str, Any]  # data.object, scrubbed
    payload: dict[str, Any]  # the whole event, scrubbed

    @classmethod
    def from_verified(cls, event: dict[str, Any]) -> StripeEvent:
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        event_id, event_type, created = _text(event.get("id")), _text(event.get("type")), _int(event.get("created"))
        if event_id is None or event_type is None or created is None or not isinstance(obj, dict):
            raise Rejected("not_an_event", "a Stripe event needs id, type, created and data.object")
        payload = scrub(event)
        return cls(
            provider_event_id=event_id,
            type=event_type,
            api_version=_text(event.get("api_version")),
            livemode=event.get("livemode") is True,
            created=created,
            object=payload["data"]["object"],
            payload=payload,
        )

    @property
    def object_type(self) -> str | None:
        return _text(self.object.get("object"))

    @property
    def object_id(self) -> str | None:
        return _text(self.object.get("id"))

    @property
    def metadata(self) -> dict[str, Any]:
        metadata = self.object.get("metadata")
        return metadata if isinstance(metadata, dict) else {}

    @property
    def order_id(self) -> str | None:
        return _text(self.metadata.get("order_id"))

    @property
    def attempt_id(self) -> str | None:
        return _text(self.metadata.get("attempt_id"))

    @property
    def payment_intent_id(self) -> str | None:
        if self.object_type == "payment_intent":
            return self.object_id
        ref = self.object.get("payment_intent")  # charges, refunds, disputes: an id, or expanded
        return _text(ref.get("id")) if isinstance(ref, dict) else _text(ref)

    @property
    def message_key(self) -> str:
        """Kafka key: the order when the payment service tagged the object, so its events stay in order."""
        return self.order_id or self.object_id or self.provider_event_id

    def forwarded(self, signed_delivery: SealedDelivery | None = None) -> ProviderStripeEvent:
        """The provider.stripe.event payload; signed_delivery is the proof the consumer applies it on."""
        return ProviderStripeEvent.of(self.payload, signed_delivery=signed_delivery)
