"""Admin input that once gave a 500 (control characters PostgreSQL cannot store) is refused with a 422 problem;
the service's body limit holds on every route while the webhook keeps its own, larger one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from handshake_devstack.tokens import issue_token
from handshake_webhook_ingest.app import create_app

PROBLEM = "application/problem+json"
SERVICE_LIMIT = 2048
WEBHOOK_LIMIT = 8192


@pytest.fixture
async def client(make_settings, webhook_secret) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = make_settings([webhook_secret], http_max_body_bytes=SERVICE_LIMIT, webhook_max_body_bytes=WEBHOOK_LIMIT)
    app = create_app(settings)  # no lifespan: storing and reading need only the database
    support = {"Authorization": "Bearer " + issue_token(settings, "agent-7", ["support"])}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://service", headers=support
    ) as c:
        yield c, app
    await app.state.runtime.db.dispose()


def assert_problem(r: httpx.Response, status: int, type_: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == f"https://handshake.dev/problems/{type_}"


async def stored(client: httpx.AsyncClient, stripe_like: Any, secret: str, padding: int = 0) -> dict[str, Any]:
    event = stripe_like.event(order_id=str(uuid.uuid4()))
    event["data"]["object"]["description"] = "x" * padding
    body = stripe_like.body(event)
    r = await client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": stripe_like.sign(body, secret)}
    )
    assert r.status_code == 200, r.text
    return dict(event)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/admin/provider-events?order_id=o%00",
        "/v1/admin/provider-events?payment_intent_id=pi%01",
        "/v1/admin/provider-events/evt%00",
    ],
)
async def test_lookups_with_control_characters_are_refused(client, path) -> None:
    c, _ = client
    assert_problem(await c.get(path), 422, "invalid-request")


async def test_a_replay_reason_with_control_characters_is_refused_and_nothing_is_forwarded(
    client, stripe_like, webhook_secret, observe
) -> None:
    c, app = client
    event = await stored(c, stripe_like, webhook_secret)
    r = await c.post(
        f"/v1/admin/provider-events/{event['id']}/replay",
        json={"reason": "lost\x00downstream"},
        headers={"Idempotency-Key": "replay-1"},
    )
    assert_problem(r, 422, "invalid-request")
    db = app.state.runtime.db
    assert await observe.scalar(db, "SELECT count(*) FROM provider_event_replays") == 0
    assert await observe.scalar(db, "SELECT count(*) FROM outbox") == 1


async def test_the_webhook_keeps_its_own_limit_above_the_service_limit(
    client, stripe_like, webhook_secret, observe
) -> None:
    c, app = client
    # a signed event larger than the service's limit, within the webhook's: stored
    event = await stored(c, stripe_like, webhook_secret, padding=SERVICE_LIMIT * 2)
    # the same size anywhere else: refused for its size before anything is read
    r = await c.post(
        f"/v1/admin/provider-events/{event['id']}/replay",
        content=b" " * (SERVICE_LIMIT + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(r, 413, "payload-too-large")
    # and past the webhook's own limit the webhook refuses too
    big = stripe_like.event(order_id=str(uuid.uuid4()))
    big["data"]["object"]["description"] = "x" * WEBHOOK_LIMIT
    body = stripe_like.body(big)
    r = await c.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": stripe_like.sign(body, webhook_secret)}
    )
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    db = app.state.runtime.db
    assert await observe.scalar(db, "SELECT count(*) FROM provider_events") == 1
    assert await observe.scalar(db, "SELECT count(*) FROM provider_event_replays") == 0
