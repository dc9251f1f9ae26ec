"""Verified provider events as forwarded by webhook-ingest on provider.events.v1."""

from __future__ import annotations

from typing import Any

from handshake_shared.events.base import Payload


class ProviderStripeEvent(Payload):
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
