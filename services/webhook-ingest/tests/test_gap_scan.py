"""Webhook gap detection against the real Stripe emulator: events no webhook brought are listed and ingested."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import stripe
from prometheus_client import REGISTRY
from sqlalchemy import text

from handshake_devstack.testing.fixtures import isolated_kafka_settings, serve_in_process
from handshake_webhook_ingest.app import create_app
from handshake_webhook_ingest.settings import WebhookIngestSettings

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}


def gap_events() -> float:
    return REGISTRY.get_sample_value("handshake_webhook_gap_events_total", {"provider": "stripe"}) or 0.0


def paid_intent(client: stripe.StripeClient, order_id: str) -> str:
    """A PaymentIntent created and confirmed at the emulator, as the browser and payment service do."""
    pm = client.v1.payment_methods.create({"type": "card", "card": CARD})
    pi = client.v1.payment_intents.create(
        {"amount": 1850, "currency": "eur", "metadata": {"order_id": order_id, "attempt_id": str(uuid.uuid4())}}
    )
    client.v1.payment_intents.update(pi.id, {"payment_method": pm.id})
    assert client.v1.payment_intents.confirm(pi.id).status == "succeeded"
    return pi.id


def succeeded_event_of(client: stripe.StripeClient, pi_id: str) -> dict:
    """The emulator's payment_intent.succeeded for this intent, as plain JSON."""
    page = client.v1.events.list(params={"type": "payment_intent.succeeded", "limit": 100})
    [event] = [e for e in json.loads(page.last_response.body)["data"] if e["data"]["object"]["id"] == pi_id]
    return event


async def test_the_gap_scan_ingests_events_no_webhook_brought_exactly_once_and_leaves_webhook_ones_alone(
    database_url, webhook_secret, stack, stripe_like, observe
):
    settings = WebhookIngestSettings(
        database_url=database_url,
        stripe_webhook_secrets=[webhook_secret],
        stripe_api_key=stack.stripe.api_key,
        stripe_api_base=stack.stripe.api_base,
        gap_scan_interval_seconds=0,  # no background scans: this test drives them
        **isolated_kafka_settings(stack),
    )
    app = create_app(settings)
    db = app.state.runtime.db
    scanner = app.state.gap_scanner
    sdk = stripe.StripeClient(stack.stripe.api_key, base_addresses={"api": stack.stripe.api_base})
    missed_order, delivered_order = str(uuid.uuid4()), str(uuid.uuid4())
    async with serve_in_process(app) as client:
        # no webhook endpoint points at this app: both successes happen only at the provider
        missed_pi = await asyncio.to_thread(paid_intent, sdk, missed_order)
        delivered_pi = await asyncio.to_thread(paid_intent, sdk, delivered_order)
        await asyncio.sleep(1.5)
        # ... except that the second one reaches us by webhook, signed as Stripe signs it
        delivered = await asyncio.to_thread(succeeded_event_of, sdk, delivered_pi)
        body = json.dumps(delivered).encode()
        signature = {"Stripe-Signature": stripe_like.sign(body, webhook_secret)}
        r = await client.post("/webhooks/stripe", content=body, headers=signature)
        assert r.status_code == 200 and r.json()["duplicate"] is False

        before = gap_events()
        first = await scanner.scan_once()
        assert first is not None and first["listed"] >= 2 and first["ingested"] >= 1
        assert gap_events() == before + first["ingested"]

        row_sql = (
            "SELECT provider_event_id, source, delivery_count, order_id, payload FROM provider_events "
            "WHERE type = 'payment_intent.succeeded' AND object_id = :pi"
        )
        async with db.engine.connect() as conn:
            missed_row = (await conn.execute(text(row_sql), {"pi": missed_pi})).one()
            delivered_row = (await conn.execute(text(row_sql), {"pi": delivered_pi})).one()
        assert (missed_row.source, missed_row.delivery_count, missed_row.order_id) == ("gap_scan", 1, missed_order)
        assert "client_secret" not in json.dumps(missed_row.payload)
        # listed again by the scan, but it had come by webhook: not stored again, not counted as a delivery
        assert (delivered_row.source, delivered_row.delivery_count) == ("webhook", 1)
        assert delivered_row.provider_event_id == delivered["id"]

        # a second scan lists the same events again (overlap) and ingests nothing new
        second = await scanner.scan_once()
        assert second is not None and second["listed"] >= 2 and second["ingested"] == 0
        assert gap_events() == before + first["ingested"]

        async with db.engine.connect() as conn:
            scans = (
                await conn.execute(
                    text(
                        "SELECT started_at, finished_at, listed, ingested, error, cursor_after "
                        "FROM provider_event_gap_scans ORDER BY id"
                    )
                )
            ).all()
            cursor = (await conn.execute(text("SELECT last_created FROM provider_event_cursor"))).scalar_one()
        assert [(s.listed, s.ingested, s.error) for s in scans] == [
            (first["listed"], first["ingested"], None),
            (second["listed"], 0, None),
        ]
        assert all(s.finished_at >= s.started_at for s in scans)
        assert cursor >= missed_row.payload["created"] and scans[-1].cursor_after == cursor

        await observe.outbox_drained(db)
        bootstrap = stack.broker.bootstrap_servers
        missed_msgs = await observe.forwarded_messages(bootstrap, missed_order)
        delivered_msgs = await observe.forwarded_messages(bootstrap, delivered_order)
        metrics = (await client.get("/metrics")).text
    # each success forwarded exactly once, whichever way it came
    assert [e.data["provider_event_id"] for _, e in missed_msgs].count(missed_row.provider_event_id) == 1
    assert [e.data["provider_event_id"] for _, e in delivered_msgs].count(delivered["id"]) == 1
    [(_, forwarded)] = [(r, e) for r, e in missed_msgs if e.data["provider_event_id"] == missed_row.provider_event_id]
    assert forwarded.type == "provider.stripe.event"
    assert (forwarded.data["amount"], forwarded.data["currency"]) == (1850, "EUR")
    assert forwarded.data["object_id"] == missed_pi
    # nothing signed it: payment confirms it with the provider before applying it
    assert forwarded.data["signed_delivery"] is None
    [(_, by_webhook)] = [(r, e) for r, e in delivered_msgs if e.data["provider_event_id"] == delivered["id"]]
    assert by_webhook.data["signed_delivery"] is not None
    assert "handshake_webhook_gap_events_total" in metrics
    await db.dispose()


async def test_the_gap_scan_runs_in_the_background_at_its_interval_and_zero_disables_it(database_url, stack):
    common = dict(
        database_url=database_url,
        stripe_api_key=stack.stripe.api_key,
        stripe_api_base=stack.stripe.api_base,
        **isolated_kafka_settings(stack),
    )
    assert WebhookIngestSettings(**common).gap_scan_interval_seconds == 300
    off = create_app(WebhookIngestSettings(**common, gap_scan_interval_seconds=0))
    assert not off.state.gap_scanner.enabled
    app = create_app(WebhookIngestSettings(**common, gap_scan_interval_seconds=0.2))
    db = app.state.runtime.db
    async with serve_in_process(app):
        deadline = time.monotonic() + 10
        while not await _scans(db, "finished_at IS NOT NULL") >= 2:
            assert time.monotonic() < deadline, "the background gap scan did not run twice in 10 s"
            await asyncio.sleep(0.1)
    assert await _scans(db, "error IS NOT NULL") == 0
    await db.dispose()
    await off.state.runtime.db.dispose()


async def _scans(db, where: str) -> int:
    async with db.engine.connect() as conn:
        return (await conn.execute(text(f"SELECT count(*) FROM provider_event_gap_scans WHERE {where}"))).scalar_one()
