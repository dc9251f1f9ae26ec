"""Send a Stripe-format event to webhook-ingest signed with the endpoint secret, exactly as Stripe
does, for event types the emulator never sends."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx


def signed_delivery(url: str, secret: str, event_type: str, obj: dict[str, Any]) -> httpx.Response:
    created = int(time.time())
    event = {
        "id": f"evt_test_{uuid.uuid4().hex[:20]}",
        "object": "event",
        "type": event_type,
        "created": created,
        "livemode": False,
        "api_version": "2017-08-15",
        "data": {"object": obj},
    }
    body = json.dumps(event)
    signature = hmac.new(secret.encode(), f"{created}.{body}".encode(), hashlib.sha256).hexdigest()
    return httpx.post(
        url,
        content=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": f"t={created},v1={signature}"},
    )
