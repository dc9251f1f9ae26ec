"""POST /webhooks/stripe against real PostgreSQL and the real broker, in-process."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from types import SimpleNamespace

import httpx
from prometheus_client import REGISTRY
from sqlalchemy import text

from handshake_devstack.testing.fixtures import serve_in_process
from handshake_devstack.tokens import issue_token
from handshake_shared.events.provider import SealedDelivery, open_delivery
from handshake_webhook_ingest.app import create_app

STORED = "SELECT count(*) FROM provider_events"
OUTBOX = "SELECT count(*) FROM outbox"


async def deliver(
    client: httpx.AsyncClient, stripe_like: SimpleNamespace, body: bytes, secret: str, timestamp: int | None = None
) -> httpx.Response:
    """POST the body as Stripe would, signed with the endpoint secret."""
    headers = {"Stripe-Signature": stripe_like.sign(body, secret, timestamp)}
    return await client.post("/webhooks/stripe", content=body, headers=headers)


def rejected_count(reason: str) -> float:
    labels = {"provider": "stripe", "reason": reason}
    return REGISTRY.get_sample_value("handshake_webhook_rejected_total", labels) or 0.0


async def test_a_signed_payment_event_is_stored_and_forwarded_keyed_by_order_without_client_secret(
    settings, webhook_secret, stack, stripe_like, observe
):
    order_id, attempt_id = str(uuid.uuid4()), str(uuid.uuid4())
    event = stripe_like.event("payment_intent.succeeded", order_id=order_id, attempt_id=attempt_id, amount=4999)
    body = stripe_like.body(event)
    app = create_app(settings)
    db = app.state.runtime.db
    async with serve_in_process(app) as client:
        header = stripe_like.sign(body, webhook_secret)
        r = await client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": header})
        assert r.status_code == 200, r.text
        assert r.json() == {"received": True, "duplicate": False}
        # committed before the 200: the row is there the moment the provider has its answer
        row_sql = (
            "SELECT delivery_count, order_id, attempt_id, raw_body, signature_header, payload FROM provider_events "
            "WHERE provider_event_id = :id"
        )
        async with db.engine.connect() as conn:
            row = (await conn.execute(text(row_sql), {"id": event["id"]})).one()
        assert (row.delivery_count, row.order_id, row.attempt_id) == (1, order_id, attempt_id)
        assert bytes(row.raw_body) == body and row.signature_header == header
        assert "client_secret" not in json.dumps(row.payload)

        await observe.outbox_drained(db)
        messages = await observe.forwarded_messages(stack.broker.bootstrap_servers, order_id)
    assert len(messages) == 1
    record, cloud_event = messages[0]
    assert cloud_event.type == "provider.stripe.event"
    assert cloud_event.subject == order_id and record.key == order_id.encode()
    assert dict(record.headers)["content-type"] == b"application/cloudevents+json"
    data = cloud_event.data
    assert (data["provider_event_id"], data["provider_type"]) == (event["id"], "payment_intent.succeeded")
    assert (data["order_id"], data["attempt_id"], data["amount"], data["currency"], data["status"]) == (
        order_id,
        attempt_id,
        4999,
        "EUR",
        "succeeded",
    )
    assert data["object"]["id"] == event["data"]["object"]["id"]
    assert b"client_secret" not in record.value and b"_secret_" not in record.value
    # the proof: exactly the bytes and the header Stripe signed, readable only with the endpoint secret
    sealed = SealedDelivery.model_validate(data["signed_delivery"])
    assert open_delivery(sealed, [webhook_secret]) == (body, header, webhook_secret)
    assert open_delivery(sealed, ["whsec_" + "0" * 48]) is None
    await db.dispose()


async def test_a_redelivered_event_is_acknowledged_and_counted_but_forwarded_once(
    settings, webhook_secret, stack, stripe_like, observe
):
    order_id = str(uuid.uuid4())
    event = stripe_like.event(order_id=order_id)
    body = stripe_like.body(event)
    app = create_app(settings)
    db = app.state.runtime.db
    async with serve_in_process(app) as client:
        first = await deliver(client, stripe_like, body, webhook_secret)
        # Stripe signs every attempt afresh, with a later timestamp
        again = await deliver(client, stripe_like, body, webhook_secret, timestamp=int(time.time()) + 1)
        assert (first.status_code, again.status_code) == (200, 200)
        assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
        assert await observe.scalar(db, "SELECT delivery_count FROM provider_events") == 2
        assert await observe.scalar(db, OUTBOX) == 1
        await observe.outbox_drained(db)
        assert len(await observe.forwarded_messages(stack.broker.bootstrap_servers, order_id)) == 1
    await db.dispose()


async def test_concurrent_deliveries_of_one_event_forward_it_exactly_once(
    settings, webhook_secret, stripe_like, observe
):
    event = stripe_like.event(order_id=str(uuid.uuid4()))
    body = stripe_like.body(event)
    app = create_app(settings)
    db = app.state.runtime.db
    async with serve_in_process(app) as client:
        header = {"Stripe-Signature": stripe_like.sign(body, webhook_secret)}
        answers = await asyncio.gather(
            *[client.post("/webhooks/stripe", content=body, headers=header) for _ in range(8)]
        )
        assert [a.status_code for a in answers] == [200] * 8
        assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 7
        assert await observe.scalar(db, "SELECT delivery_count FROM provider_events") == 8
        assert await observe.scalar(db, OUTBOX) == 1
    await db.dispose()


async def test_deliveries_that_do_not_verify_are_refused_and_nothing_is_stored(
    settings, webhook_secret, stripe_like, observe
):
    body = stripe_like.body(stripe_like.event(order_id=str(uuid.uuid4())))
    stale = int(time.time()) - settings.webhook_tolerance_seconds - 5
    cases = {
        "wrong secret": (body, {"Stripe-Signature": stripe_like.sign(body, "whsec_attacker")}, "signature_mismatch"),
        "tampered body": (
            body.replace(b'"amount": 4999', b'"amount": 1'),
            {"Stripe-Signature": stripe_like.sign(body, webhook_secret)},
            "signature_mismatch",
        ),
        "missing header": (body, {}, "missing_header"),
        "stale timestamp": (
            body,
            {"Stripe-Signature": stripe_like.sign(body, webhook_secret, stale)},
            "timestamp_outside_tolerance",
        ),
        "signed but not JSON": (
            b"{oops",
            {"Stripe-Signature": stripe_like.sign(b"{oops", webhook_secret)},
            "invalid_json",
        ),
    }
    app = create_app(settings)
    db = app.state.runtime.db
    async with serve_in_process(app) as client:
        for case, (content, headers, reason) in cases.items():
            before = rejected_count(reason)
            r = await client.post("/webhooks/stripe", content=content, headers=headers)
            assert r.status_code == 400, case
            assert r.headers["content-type"] == "application/problem+json", case
            assert r.json()["reason"] == reason, case
            assert rejected_count(reason) == before + 1, case
        assert await observe.scalar(db, STORED) == 0
        assert await observe.scalar(db, OUTBOX) == 0
        metrics = (await client.get("/metrics")).text
        assert 'handshake_webhook_rejected_total{provider="stripe",reason="timestamp_outside_tolerance"}' in metrics
    await db.dispose()


async def test_during_secret_rotation_an_event_signed_with_the_second_secret_is_accepted(
    make_settings, stripe_like, observe, stack
):
    current, previous = "whsec_" + uuid.uuid4().hex, "whsec_" + uuid.uuid4().hex
    app = create_app(make_settings([current, previous]))
    db = app.state.runtime.db
    order_id = str(uuid.uuid4())
    body = stripe_like.body(stripe_like.event(order_id=order_id))
    async with serve_in_process(app) as client:
        r = await deliver(client, stripe_like, body, previous)
        assert r.status_code == 200, r.text
        assert await observe.scalar(db, STORED) == 1
        await observe.outbox_drained(db)
        [(_, forwarded)] = await observe.forwarded_messages(stack.broker.bootstrap_servers, order_id)
    await db.dispose()
    # sealed under the secret that signed it: what payment, configured with the same list, verifies with
    sealed = SealedDelivery.model_validate(forwarded.data["signed_delivery"])
    assert open_delivery(sealed, [current]) is None
    assert open_delivery(sealed, [previous]) is not None


async def test_an_oversized_body_is_refused_before_it_is_stored(make_settings, webhook_secret, stripe_like, observe):
    app = create_app(make_settings([webhook_secret], webhook_max_body_bytes=2048))
    db = app.state.runtime.db
    event = stripe_like.event(order_id=str(uuid.uuid4()))
    event["data"]["object"]["description"] = "x" * 4096
    body = stripe_like.body(event)
    header = {"Stripe-Signature": stripe_like.sign(body, webhook_secret)}

    async def chunked():  # no Content-Length: the limit must hold while streaming
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    async with serve_in_process(app) as client:
        declared = await client.post("/webhooks/stripe", content=body, headers=header)
        streamed = await client.post("/webhooks/stripe", content=chunked(), headers=header)
        for r in (declared, streamed):
            assert r.status_code == 413
            assert r.headers["content-type"] == "application/problem+json"
        assert "content-length" not in streamed.request.headers
        assert await observe.scalar(db, STORED) == 0
        assert await observe.scalar(db, OUTBOX) == 0
    await db.dispose()


async def test_an_unknown_event_type_is_stored_acknowledged_and_forwarded(
    settings, webhook_secret, stack, stripe_like, observe
):
    event = stripe_like.event("issuing_card.shipped_to_the_moon")
    body = stripe_like.body(event)
    app = create_app(settings)
    db = app.state.runtime.db
    async with serve_in_process(app) as client:
        r = await deliver(client, stripe_like, body, webhook_secret)
        assert r.status_code == 200 and r.json() == {"received": True, "duplicate": False}
        assert await observe.scalar(db, "SELECT type FROM provider_events") == "issuing_card.shipped_to_the_moon"
        await observe.outbox_drained(db)
        # no order in its metadata: keyed by the object it is about
        messages = await observe.forwarded_messages(stack.broker.bootstrap_servers, event["data"]["object"]["id"])
        assert [e.data["provider_type"] for _, e in messages] == ["issuing_card.shipped_to_the_moon"]
    await db.dispose()


async def test_support_can_look_up_stored_events_by_order_and_intent_without_secrets(
    settings, webhook_secret, stripe_like
):
    order_id = str(uuid.uuid4())
    event = stripe_like.event(order_id=order_id)
    pi_id = event["data"]["object"]["id"]
    body = stripe_like.body(event)
    app = create_app(settings)
    support = {"Authorization": "Bearer " + issue_token(settings, "agent-1", ["support"])}
    customer = {"Authorization": "Bearer " + issue_token(settings, "cus-1", ["customer"])}
    async with serve_in_process(app) as client:
        r = await deliver(client, stripe_like, body, webhook_secret)
        assert r.status_code == 200
        listing = "/v1/admin/provider-events"
        assert (await client.get(listing, params={"order_id": order_id})).status_code == 401
        assert (await client.get(listing, params={"order_id": order_id}, headers=customer)).status_code == 403

        by_order = await client.get(listing, params={"order_id": order_id}, headers=support)
        by_intent = await client.get(listing, params={"payment_intent_id": pi_id}, headers=support)
        assert by_order.status_code == 200 and by_order.json() == by_intent.json()
        [listed] = by_order.json()["provider_events"]
        assert (listed["provider_event_id"], listed["delivery_count"]) == (event["id"], 1)

        detail = await client.get(f"/v1/admin/provider-events/{event['id']}", headers=support)
        assert detail.status_code == 200
        assert detail.json()["payload"]["data"]["object"]["id"] == pi_id
        assert detail.json()["raw_body_bytes"] == len(body)
        assert "client_secret" not in detail.text and "_secret_" not in detail.text
        missing = await client.get("/v1/admin/provider-events/evt_missing", headers=support)
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        assert (await client.get("/readyz")).json()["status"] == "ok"
    await app.state.runtime.db.dispose()
