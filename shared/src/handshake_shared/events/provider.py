"""Verified provider events as forwarded by webhook-ingest on provider.events.v1.

Writing to the topic is not proof that Stripe said something: the consumer applies an event only when it
carries the webhook delivery exactly as Stripe signed it (raw body and Stripe-Signature header), or after
confirming the event with Stripe itself. The delivery travels sealed (AES-256-GCM under a key derived from
the endpoint's signing secret), because the signed body of a payment_intent.* event contains the intent's
client secret, which must never be readable on a topic: only a holder of the signing secret can seal or
open it, the same holders who could sign a webhook anyway."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field

from handshake_shared.events.base import Payload
from handshake_shared.events.topics import PROVIDER_EVENTS

# never forwarded in the clear or served: whoever holds it can confirm the payment from a browser
SECRET_KEYS = frozenset({"client_secret"})

SEAL_ALGORITHM: Final = "A256GCM+HMAC-SHA256(whsec)"
# key separation: the sealing key is derived from the signing secret, never the secret itself
_KEY_LABEL = b"handshake provider.events.v1 sealed webhook delivery v1"
_AAD = b"provider.stripe.event"
_NONCE_BYTES = 12


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


class SealedDelivery(Payload):
    """The webhook delivery as received, sealed: `t=...,v1=...` header, a newline, then the raw body bytes."""

    alg: Literal["A256GCM+HMAC-SHA256(whsec)"] = Field(
        default=SEAL_ALGORITHM, description="AES-256-GCM, key = HMAC-SHA256(endpoint signing secret, label)"
    )
    nonce: str = Field(description="base64url, 12 bytes")
    ciphertext: str = Field(description="base64url: ciphertext and tag of header + LF + raw body")


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def seal_delivery(raw_body: bytes, signature_header: str, secret: str) -> SealedDelivery:
    if "\n" in signature_header or "\r" in signature_header:
        raise ValueError("a Stripe-Signature header has no line breaks")
    nonce = os.urandom(_NONCE_BYTES)
    plaintext = signature_header.encode("utf-8") + b"\n" + raw_body
    return SealedDelivery(nonce=_b64(nonce), ciphertext=_b64(AESGCM(_key(secret)).encrypt(nonce, plaintext, _AAD)))


def open_delivery(sealed: SealedDelivery, secrets: Sequence[str]) -> tuple[bytes, str, str] | None:
    """(raw body, Stripe-Signature header, the secret that opened it), or None when no secret opens it."""
    try:
        nonce = base64.urlsafe_b64decode(sealed.nonce)
        ciphertext = base64.urlsafe_b64decode(sealed.ciphertext)
    except ValueError:
        return None
    if len(nonce) != _NONCE_BYTES:
        return None
    for secret in secrets:
        try:
            plaintext = AESGCM(_key(secret)).decrypt(nonce, ciphertext, _AAD)
        except InvalidTag:
            continue
        header, sep, body = plaintext.partition(b"\n")
        if not sep:
            return None
        return body, header.decode("utf-8", errors="replace"), secret
    return None


class ProviderStripeEvent(Payload):
    """A Stripe event as webhook-ingest received it, with the sealed signed delivery as proof."""

    event_type = "provider.stripe.event"
    event_topic = PROVIDER_EVENTS
    # order_id and attempt_id are copied from the provider object's metadata as they are, unchecked: text
    provider_event_id: str
    provider_type: str
    created: int
    livemode: bool
    object_type: str | None = None
    object_id: str | None = None
    order_id: str | None = None
    attempt_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    status: str | None = None
    # data.object as the provider sent it, minus client secrets
    object: dict[str, Any]
    # the proof: the signed webhook delivery, sealed. Absent for events the gap scan fetched from the API
    # (nothing signed them) and for replays whose signature no configured secret verifies any more; the
    # consumer then confirms the event with the provider before applying it. The fields above are a
    # convenience for people and tools reading the topic: the consumer applies only what the proof (or the
    # provider) says
    signed_delivery: SealedDelivery | None = Field(
        default=None,
        description="the Stripe-signed webhook delivery (raw body + Stripe-Signature), sealed; absent: the "
        "consumer confirms the event with the provider. The other fields are not proof of anything",
    )

    @classmethod
    def of(cls, event: Mapping[str, Any], *, signed_delivery: SealedDelivery | None = None) -> ProviderStripeEvent:
        """The payload for a Stripe event (plain JSON data: id, type, created, data.object), client secrets
        removed. ValueError when it is not a Stripe event."""
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        event_id, event_type, created = _text(event.get("id")), _text(event.get("type")), _int(event.get("created"))
        if event_id is None or event_type is None or created is None or not isinstance(obj, dict):
            raise ValueError("a Stripe event needs id, type, created and data.object")
        obj = scrub(obj)
        metadata = obj.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        return cls(
            provider_event_id=event_id,
            provider_type=event_type,
            created=created,
            livemode=event.get("livemode") is True,
            object_type=_text(obj.get("object")),
            object_id=_text(obj.get("id")),
            order_id=_text(metadata.get("order_id")),
            attempt_id=_text(metadata.get("attempt_id")),
            amount=_int(obj.get("amount")),
            # ISO 4217 upper case like every other Handshake amount; Stripe sends lower case
            currency=(_text(obj.get("currency")) or "").upper() or None,
            status=_text(obj.get("status")),
            object=obj,
            signed_delivery=signed_delivery,
        )
