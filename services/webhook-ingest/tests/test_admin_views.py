"""What staff read about an order's provider events: how each came (deliveries, signature), whether and when it
was forwarded, who replayed it and why; page after page in the provider's order."""

from __future__ import annotations

import base64
import json
import uuid

from handshake_devstack.testing.fixtures import serve_in_process
from handshake_devstack.tokens import issue_token
from handshake_webhook_ingest.app import create_app
from handshake_webhook_ingest.stripe_events import StripeEvent

PROBLEM = "application/problem+json"


async def test_an_orders_provider_events_say_how_they_came_were_forwarded_and_replayed(
    settings, webhook_secret, stripe_like, observe
):
    order_id = str(uuid.uuid4())
    delivered = stripe_like.event("payment_intent.succeeded", order_id=order_id)
    found = stripe_like.event("payment_intent.created", order_id=order_id)
    found["created"] = delivered["created"] - 10
    app = create_app(settings)
    db = app.state.runtime.db
    finance = {"Authorization": "Bearer " + issue_token(settings, "agent-3", ["finance"])}
    support = {"Authorization": "Bearer " + issue_token(settings, "agent-7", ["support"])}
    async with serve_in_process(app) as client:
        body = stripe_like.body(delivered)
        for _ in range(2):  # Stripe delivered it twice
            signed = {"Stripe-Signature": stripe_like.sign(body, webhook_secret)}
            assert (await client.post("/webhooks/stripe", content=body, headers=signed)).status_code == 200
        await observe.outbox_drained(db)
        # the gap scan found one Stripe never delivered: stored unsigned
        ingest = app.state.gap_scanner.ingest
        await ingest.store(StripeEvent.from_verified(found), stripe_like.body(found), source="gap_scan")
        replay = await client.post(
            f"/v1/admin/provider-events/{delivered['id']}/replay",
            json={"reason": "payment lost it (INC-7)"},
            headers={**support, "Idempotency-Key": "replay-inc-7"},
        )
        assert replay.status_code == 202
        await observe.outbox_drained(db)

        r = await client.get("/v1/admin/provider-events", params={"order_id": order_id}, headers=finance)

    assert r.status_code == 200, r.text
    first, second = r.json()["provider_events"]
    assert r.json()["next"] is None
    # in the provider's order: the one it created first comes first, however late we learned of it
    assert (first["provider_event_id"], first["source"], first["signature"]) == (found["id"], "gap_scan", "unsigned")
    assert first["delivery_count"] == 1 and first["signature_proof_held"] is False and first["replays"] == []
    assert first["forwarding"] == "published"
    assert (second["provider_event_id"], second["signature"], second["signature_proof_held"]) == (
        delivered["id"],
        "verified",
        True,
    )
    assert second["delivery_count"] == 2
    assert second["forwarding"] == "published" and second["forwarded_at"] is not None
    [replayed] = second["replays"]
    assert (replayed["actor"], replayed["reason"]) == ("agent-7", "payment lost it (INC-7)")
    assert replayed["replayed_at"] and replayed["forwarded_event_id"] != second["forwarded_event_id"]


async def test_an_orders_provider_events_come_page_by_page_each_once(settings, stripe_like):
    order_id = str(uuid.uuid4())
    app = create_app(settings)
    ingest = app.state.gap_scanner.ingest
    events = [stripe_like.event("payment_intent.processing", order_id=order_id) for _ in range(5)]
    for i, event in enumerate(events):
        event["created"] = 1_700_000_000 + i // 2  # two by two in the same second: arrival decides
        await ingest.store(StripeEvent.from_verified(event), stripe_like.body(event), source="gap_scan")
    admin = {"Authorization": "Bearer " + issue_token(settings, "ops-1", ["admin"])}
    async with serve_in_process(app) as client:
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            params = {"order_id": order_id, "limit": 2} | ({"after": cursor} if cursor else {})
            page = (await client.get("/v1/admin/provider-events", params=params, headers=admin)).json()
            seen += [e["provider_event_id"] for e in page["provider_events"]]
            cursor = page["next"]
            if cursor is None:
                break
        bad = await client.get(
            "/v1/admin/provider-events", params={"order_id": order_id, "after": "bm90LWpzb24"}, headers=admin
        )
        # a forged position before year 1 in UTC: refused as a cursor, never handed to the database driver
        edge = base64.urlsafe_b64encode(json.dumps([1, "0001-01-01T00:00:00+05:00", "evt"]).encode()).decode()
        forged = await client.get(
            "/v1/admin/provider-events", params={"order_id": order_id, "after": edge}, headers=admin
        )
    await app.state.runtime.db.dispose()
    assert seen == [e["id"] for e in events]
    assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
    assert bad.json()["type"].endswith("/invalid-cursor")
    assert forged.status_code == 400 and forged.json()["type"].endswith("/invalid-cursor")
