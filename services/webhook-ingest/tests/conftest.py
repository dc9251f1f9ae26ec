"""Stripe-format events signed exactly as Stripe signs them, and the service wired to the real stack."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent, parse_event
from handshake_shared.events import PROVIDER_EVENTS
from handshake_webhook_ingest.settings import WebhookIngestSettings


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the endpoint secret>."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def stripe_event(
    event_type: str = "payment_intent.succeeded",
    *,
    order_id: str | None = None,
    attempt_id: str | None = None,
    amount: int = 4999,
    currency: str = "eur",
    event_id: str | None = None,
) -> dict[str, Any]:
    """A Stripe event around a PaymentIntent, shaped as the emulator and API version 2017-08-15 send it."""
    pi_id = "pi_" + secrets.token_hex(12)
    metadata = {k: v for k, v in (("order_id", order_id), ("attempt_id", attempt_id)) if v}
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2017-08-15",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {
            "object": {
                "id": pi_id,
                "object": "payment_intent",
                "amount": amount,
                "amount_received": amount,
                "currency": currency,
                "status": "succeeded",
                "capture_method": "automatic_async",
                "client_secret": f"{pi_id}_secret_{secrets.token_hex(8)}",
                "metadata": metadata,
                "latest_charge": {
                    "id": "ch_" + secrets.token_hex(12),
                    "object": "charge",
                    "amount": amount,
                    "payment_intent": pi_id,
                    "status": "succeeded",
                },
            }
        },
    }


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2, sort_keys=True).encode()


@pytest.fixture
def webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


@pytest.fixture
def database_url(fresh_database) -> str:
    # created at setup: the shared migration helper runs its own event loop, so not inside a test's loop
    return fresh_database("handshake_webhook_ingest")


@pytest.fixture
def make_settings(stack, database_url) -> Callable[..., WebhookIngestSettings]:
    """make_settings([secret, ...], **overrides): settings on this test's fresh database and the real broker."""

    def make(secrets_: list[str], **overrides: Any) -> WebhookIngestSettings:
        return WebhookIngestSettings(
            database_url=database_url,
            kafka_bootstrap_servers=stack.broker.bootstrap_servers,
            kafka_enable_idempotence=False,
            kafka_client_id_suffix="-" + uuid.uuid4().hex[:6],
            outbox_idle_poll_seconds=0.1,
            stripe_webhook_secrets=secrets_,
            **overrides,
        )

    return make


@pytest.fixture
def settings(make_settings, webhook_secret) -> WebhookIngestSettings:
    return make_settings([webhook_secret])


@pytest.fixture
def stripe_like() -> SimpleNamespace:
    """.sign(body, secret, timestamp=None), .event(type, order_id=...), .body(event): what Stripe would send."""
    return SimpleNamespace(sign=sign, event=stripe_event, body=body_of)


async def scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def outbox_drained(db: Database, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await scalar(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL"):
        assert time.monotonic() < deadline, "the relay did not publish the outbox in time"
        await asyncio.sleep(0.05)


async def forwarded_messages(bootstrap: str, key: str, timeout: float = 10.0) -> list[tuple[Any, CloudEvent]]:
    """Every message with this key on provider.events.v1, reading each partition to its current end."""
    consumer = AIOKafkaConsumer(
        PROVIDER_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[tuple[Any, CloudEvent]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            found += [(r, parse_event(r.value)) for records in batch.values() for r in records if r.key == key.encode()]
            assignment = consumer.assignment()
            if assignment:
                ends = await consumer.end_offsets(list(assignment))
                if all([await consumer.position(tp) >= ends[tp] for tp in assignment]):
                    return found
        raise AssertionError(f"could not read {PROVIDER_EVENTS} to its end in {timeout}s")
    finally:
        await consumer.stop()


@pytest.fixture
def observe() -> SimpleNamespace:
    """.scalar(db, sql, **params), .outbox_drained(db), .forwarded_messages(bootstrap, key): read the facts."""
    return SimpleNamespace(scalar=scalar, outbox_drained=outbox_drained, forwarded_messages=forwarded_messages)
