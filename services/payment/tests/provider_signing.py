"""provider.stripe.event exactly as webhook-ingest forwards a webhook delivery Stripe signed: the event body
signed with the endpoint secret (as Stripe signs it), sealed as the proof, the normalised fields beside it.

Loaded by conftest (test modules are imported by path) as `payment_test_provider_signing`."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from handshake_shared.envelope import CloudEvent, build_event
from handshake_shared.events.provider import ProviderStripeEvent, seal_delivery

# the endpoint secret the payment service under test is configured with (conftest's settings fixture)
WEBHOOK_SECRET = "whsec_payment-tests-" + "5b1c0f6e2a7d4c39a8e1f07b3d6c9e24"


def stripe_event_body(
    stripe_type: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
) -> tuple[dict[str, Any], bytes]:
    """A Stripe event around obj (client secret and all, as Stripe sends it) and its body bytes."""
    event = {
        "id": event_id or "evt_" + uuid.uuid4().hex[:16],
        "object": "event",
        "api_version": "2017-08-15",
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "pending_webhooks": 1,
        "type": stripe_type,
        "data": {"object": obj},
    }
    return event, json.dumps(event, indent=2).encode()


def sign(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={hmac.new(secret.encode(), f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"


def forwarded(
    stripe_type: str,
    obj: dict[str, Any],
    *,
    key: str | None = None,
    event_id: str | None = None,
    created: int | None = None,
    secret: str = WEBHOOK_SECRET,
    sequence: int = 1,
) -> CloudEvent:
    """The message webhook-ingest writes for a delivery of this event that Stripe signed with secret. The key
    is the order id (webhook-ingest uses the object's metadata, then its id)."""
    event, body = stripe_event_body(stripe_type, obj, event_id=event_id, created=created)
    payload = ProviderStripeEvent.of(event, signed_delivery=seal_delivery(body, sign(body, secret), secret))
    key = key or payload.order_id or payload.object_id or payload.provider_event_id
    return build_event(
        service="webhook-ingest", type="provider.stripe.event", order_id=key, sequence=sequence, data=payload
    )
