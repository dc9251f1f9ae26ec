"""A verified Stripe event read into the fields we store and forward. Pure: no I/O.

No business meaning is given to any event type here; the payment service decides what matters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handshake_shared.events.provider import ProviderStripeEvent
from handshake_webhook_ingest.verification import Rejected

# never forwarded or served: whoever holds it can confirm the payment from a browser
SECRET_KEYS = frozenset({"client_secret"})


def scrub(value: Any) -> Any:
    """A copy without client secrets at any depth, and without NUL characters (which jsonb refuses)."""
    if isinstance(value, dict):
        return {k.replace("\x00", ""): scrub(v) for k, v in value.items() if k not in SECRET_KEYS}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return value.replace("\x00", "")
    return value


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

    def forwarded(self) -> ProviderStripeEvent:
        return ProviderStripeEvent(
            provider_event_id=self.provider_event_id,
            provider_type=self.type,
            created=self.created,
            livemode=self.livemode,
            object_type=self.object_type,
            object_id=self.object_id,
            order_id=self.order_id,
            attempt_id=self.attempt_id,
            amount=_int(self.object.get("amount")),
            # ISO 4217 upper case like every other Handshake amount; Stripe sends lower case
            currency=(_text(self.object.get("currency")) or "").upper() or None,
            status=_text(self.object.get("status")),
            object=self.object,
        )
