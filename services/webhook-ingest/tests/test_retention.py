"""Stored webhook events lose their client secret, billing details and signature after the retention window,
keeping what reconciliation and disputes need; a replay of a scrubbed event then goes out unsealed. Old
finished gap-scan records are deleted. Against real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, text

from handshake_shared.envelope import parse_event
from handshake_webhook_ingest.app import create_app
from handshake_webhook_ingest.db import gap_scans
from handshake_webhook_ingest.db import provider_events as pe
from handshake_webhook_ingest.ingest import StripeIngest
from handshake_webhook_ingest.retention import retention_jobs, scrub_job
from handshake_webhook_ingest.stripe_events import StripeEvent

PERSONAL = ("jane@example.com", "Jane Doe", "1 Privet Drive", "4242", "secret_")


def event_with_personal_data(stripe_like, order_id: str, attempt_id: str) -> dict:
    event = stripe_like.event("payment_intent.succeeded", order_id=order_id, attempt_id=attempt_id)
    obj = event["data"]["object"]
    obj["receipt_email"] = "jane@example.com"
    obj["metadata"]["customer_note"] = "Jane Doe"
    obj["shipping"] = {"name": "Jane Doe", "address": {"line1": "1 Privet Drive"}}
    obj["latest_charge"]["billing_details"] = {"email": "jane@example.com", "name": "Jane Doe"}
    obj["latest_charge"]["payment_method_details"] = {"card": {"last4": "4242"}}
    event["data"]["previous_attributes"] = {"receipt_email": None, "description": "Jane Doe"}
    return event


async def test_an_old_stored_event_is_scrubbed_to_what_reconciliation_needs_and_replays_unsealed(
    settings, webhook_secret, stripe_like
):
    app = create_app(settings)
    runtime = app.state.runtime
    ingest = StripeIngest(runtime.db, runtime.outbox, [webhook_secret])
    order_id, attempt_id = str(uuid.uuid4()), str(uuid.uuid4())
    old = event_with_personal_data(stripe_like, order_id, attempt_id)
    recent = event_with_personal_data(stripe_like, str(uuid.uuid4()), str(uuid.uuid4()))
    for event in (old, recent):
        body = stripe_like.body(event)
        assert await ingest.store(
            StripeEvent.from_verified(json.loads(body)), body, signature_header=stripe_like.sign(body, webhook_secret)
        )
    async with runtime.db.transaction() as conn:
        await conn.execute(
            text(
                "UPDATE provider_events SET first_received_at = now() - interval '31 days' "
                "WHERE provider_event_id = :id"
            ),
            {"id": old["id"]},
        )

    job = scrub_job(settings)
    assert job is not None and settings.webhook_body_retention_days == 30
    assert await runtime.retention.run_job(job) == 1
    assert await runtime.retention.run_job(job) == 0  # done once, not again

    async with runtime.db.engine.connect() as conn:
        rows = {r.provider_event_id: r for r in (await conn.execute(select(pe))).all()}
    scrubbed, whole = rows[old["id"]], rows[recent["id"]]
    raw = bytes(scrubbed.raw_body).decode()
    for value in (*PERSONAL, "client_secret", "billing_details", "previous_attributes", "customer_note"):
        assert value not in raw and value not in json.dumps(scrubbed.payload), value
    assert scrubbed.signature_header is None and scrubbed.scrubbed_at is not None
    assert json.loads(raw) == scrubbed.payload
    kept = scrubbed.payload["data"]["object"]
    assert (scrubbed.payload["id"], scrubbed.payload["type"], scrubbed.payload["created"]) == (
        old["id"],
        old["type"],
        old["created"],
    )
    assert (kept["id"], kept["amount"], kept["currency"], kept["status"]) == (
        old["data"]["object"]["id"],
        4999,
        "eur",
        "succeeded",
    )
    assert kept["metadata"] == {"order_id": order_id, "attempt_id": attempt_id}
    assert kept["latest_charge"]["payment_intent"] == kept["id"]
    # the columns reconciliation and disputes search by are untouched
    assert (scrubbed.order_id, scrubbed.attempt_id, scrubbed.payment_intent_id) == (order_id, attempt_id, kept["id"])
    # the recent one is still whole, with its signature
    assert "jane@example.com" in bytes(whole.raw_body).decode() and whole.signature_header is not None
    assert whole.scrubbed_at is None

    # a replay now carries no seal (its body no longer matches any signature): payment asks the provider
    replay = await ingest.replay(old["id"], actor="agent-7", reason="payment consumer lost it")
    assert replay is not None
    async with runtime.db.engine.connect() as conn:
        forwarded = {
            r.event_id: parse_event(r.payload) for r in (await conn.execute(select(runtime.tables.outbox))).all()
        }
    original = next(
        e for e in forwarded.values() if e.data["provider_event_id"] == old["id"] and e.id != replay.forwarded_event_id
    )
    assert original.data.get("signed_delivery") is not None
    again = forwarded[replay.forwarded_event_id].data
    assert again.get("signed_delivery") is None
    assert (again["provider_event_id"], again["order_id"], again["amount"], again["currency"], again["status"]) == (
        old["id"],
        order_id,
        4999,
        "EUR",
        "succeeded",
    )
    await runtime.db.dispose()


async def test_finished_gap_scans_older_than_the_retention_are_deleted(make_settings, webhook_secret) -> None:
    settings = make_settings([webhook_secret], gap_scan_retention_days=90, webhook_body_retention_days=0)
    app = create_app(settings)
    runtime = app.state.runtime
    now = datetime.now(UTC)
    async with runtime.db.transaction() as conn:
        for label, started, finished in (("old", 100, 100), ("running", 100, None), ("recent", 10, 10)):
            await conn.execute(
                insert(gap_scans).values(
                    provider="stripe",
                    listed_from=0,
                    error=label,
                    started_at=now - timedelta(days=started),
                    finished_at=None if finished is None else now - timedelta(days=finished),
                )
            )
    [job] = [j for j in retention_jobs(settings) if j is not None]  # the scrub is off (0)
    assert await runtime.retention.run_job(job) == 1
    async with runtime.db.engine.connect() as conn:
        left = set((await conn.execute(select(gap_scans.c.error))).scalars())
    assert left == {"running", "recent"}
    await runtime.db.dispose()
