"""The inventory app in-process against the real broker: order.events.v1 in, inventory.events.v1 out."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import select

from handshake_devstack.testing.fixtures import isolated_kafka_settings, serve_in_process
from handshake_devstack.tokens import issue_token
from handshake_inventory.app import create_app
from handshake_inventory.db import messaging, reservations
from handshake_inventory.metrics import refresh_gauges
from handshake_inventory.settings import InventorySettings
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent, build_event, parse_event
from handshake_shared.events import INVENTORY_EVENTS, ORDER_EVENTS


@pytest.fixture
def app_settings(settings: InventorySettings, stack) -> InventorySettings:
    # own consumer groups and a short session: joining the shared group would wait out the last member
    return settings.model_copy(update=isolated_kafka_settings(stack))


async def publish(bootstrap: str, *events: CloudEvent) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                ORDER_EVENTS,
                key=event.subject.encode(),
                value=event.to_bytes(),
                headers=[(k, v.encode()) for k, v in event.kafka_headers().items()],
            )
    finally:
        await producer.stop()


def duplicates_seen() -> float:
    labels = {"consumer": "inventory.order-events", "type": "order.placed", "outcome": "duplicate"}
    return REGISTRY.get_sample_value("handshake_events_consumed_total", labels) or 0.0


async def test_order_placed_from_the_broker_reserves_once_and_publishes_inventory_reserved(app_settings, stack) -> None:
    settings = app_settings
    app = create_app(settings)
    db = app.state.runtime.db
    admin = {"Authorization": f"Bearer {issue_token(settings, 'ops', ['admin'])}"}
    # SKU unique to this test: other suites' order.placed events on the shared topic must not touch it
    sku = f"MUG-{uuid.uuid4().hex[:8]}"
    order_id = str(uuid.uuid4())
    placed = build_event(
        service="order",
        type="order.placed",
        order_id=order_id,
        sequence=1,
        data={"order_id": order_id, "currency": "EUR", "total": 2500, "lines": [{"sku": sku, "quantity": 2}]},
    )
    # same key, so same partition and delivered after both copies: once it is in the inbox, they were handled.
    # A type inventory handles (types it does not handle leave no inbox row) and that changes nothing here: a
    # refund without restock.
    marker = build_event(
        service="order",
        type="order.partially_refunded",
        order_id=order_id,
        sequence=2,
        data={
            "order_id": order_id,
            "refund_id": "00000000-0000-4000-8000-0000000000b1",
            "amount": 100,
            "currency": "EUR",
            "refunded_total": 100,
            "restock": False,
        },
    )

    duplicates_before = duplicates_seen()
    async with serve_in_process(app) as client:
        r = await client.put(f"/v1/admin/stock/{sku}", json={"available": 5, "reason": "goods received"}, headers=admin)
        assert r.status_code == 200, r.text

        await publish(stack.broker.bootstrap_servers, placed, placed, marker)

        inbox, outbox = messaging.inbox, messaging.outbox
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            async with db.engine.connect() as conn:
                marker_seen = (
                    await conn.execute(select(inbox.c.event_id).where(inbox.c.event_id == marker.id))
                ).first()
                published = (
                    await conn.execute(
                        select(outbox.c.event_type, outbox.c.published_at).where(outbox.c.message_key == order_id)
                    )
                ).all()
            if marker_seen and published and all(p.published_at for p in published):
                break
            assert asyncio.get_running_loop().time() < deadline, f"not handled in time: {published}"
            await asyncio.sleep(0.1)

        # The second copy did arrive (the marker behind it in the same partition has been handled) and the inbox
        # stopped it: reserved once, below. The counter is the consumer's, and this group reads the shared
        # topic from its start, so copies of other suites' orders (resent announcements, an event a test
        # publishes twice) handled on other partitions meanwhile are counted too: at least one more.
        assert duplicates_seen() >= duplicates_before + 1
        assert [p.event_type for p in published] == ["inventory.reserved"]
        stock = (await client.get(f"/v1/admin/stock/{sku}", headers=admin)).json()
        assert (stock["available"], stock["reserved"], stock["sold"]) == (3, 2, 0)  # reserved once, not twice
        view = (await client.get(f"/v1/admin/reservations/{order_id}", headers=admin)).json()
        assert view["state"] == "held" and view["lines"] == [{"sku": sku, "quantity": 2}]
        async with db.engine.connect() as conn:
            assert len((await conn.execute(select(reservations.c.id))).all()) == 1

        await refresh_gauges(db)
        assert REGISTRY.get_sample_value("handshake_inventory_held_reservations") == 1
        metrics = (await client.get("/metrics")).text
        assert 'handshake_inventory_reservations_total{outcome="reserved"}' in metrics
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ok" and ready["checks"]["outbox_relay"] == "ok"
        # a relay that is no longer running would silently stop every event: the pod must say so
        app.state.runtime.loops["outbox_relay"].task.cancel()
        await asyncio.sleep(0)
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["checks"]["outbox_relay"].startswith("failed")


async def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return result


async def all_published(db: Database, order_id: str, count: int) -> bool:
    outbox = messaging.outbox
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.published_at).where(outbox.c.message_key == order_id))).all()
    return len(rows) == count and all(r.published_at for r in rows)


async def inventory_events_on_the_broker(bootstrap: str, order_id: str, count: int) -> list[CloudEvent]:
    """Read inventory.events.v1 as the order service would, keeping this order's events."""
    consumer = AIOKafkaConsumer(
        INVENTORY_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[CloudEvent] = []
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(parse_event(r.value) for r in records if r.key == order_id.encode())
    finally:
        await consumer.stop()
    return found


async def test_an_unpaid_reservation_expires_by_itself_and_a_late_payment_from_the_broker_re_reserves(
    app_settings, stack
) -> None:
    settings = app_settings.model_copy(update={"reservation_ttl_seconds": 1, "expiry_sweep_interval_seconds": 0.2})
    app = create_app(settings)
    db = app.state.runtime.db
    support = {"Authorization": f"Bearer {issue_token(settings, 'sam', ['support'])}"}
    admin = {"Authorization": f"Bearer {issue_token(settings, 'ops', ['admin'])}"}
    sku = f"TEE-{uuid.uuid4().hex[:8]}"
    order_id = str(uuid.uuid4())
    data = {
        "order_id": order_id,
        "attempt_id": "00000000-0000-4000-8000-0000000000a1",
        "payment_intent_id": "pi_1",
        "amount": 2500,
        "currency": "EUR",
    }
    placed = build_event(
        service="order",
        type="order.placed",
        order_id=order_id,
        sequence=1,
        data={"order_id": order_id, "currency": "EUR", "total": 2500, "lines": [{"sku": sku, "quantity": 2}]},
    )
    paid = build_event(service="order", type="order.paid", order_id=order_id, sequence=4, data=data)
    expired_before = REGISTRY.get_sample_value("handshake_inventory_reservations_total", {"outcome": "expired"}) or 0

    async with serve_in_process(app) as client:
        await client.put(f"/v1/admin/stock/{sku}", json={"available": 3, "reason": "goods received"}, headers=admin)
        await publish(stack.broker.bootstrap_servers, placed)

        async def expired() -> bool:
            r = await client.get(f"/v1/admin/reservations/{order_id}", headers=support)
            return r.status_code == 200 and r.json()["state"] == "expired"

        # nobody pays: the app's own sweeper gives the units back after the 1 s TTL
        await wait_for("the sweeper to expire the reservation", expired)
        stock = (await client.get(f"/v1/admin/stock/{sku}", headers=admin)).json()
        assert (stock["available"], stock["reserved"], stock["sold"]) == (3, 0, 0)
        await wait_for("inventory.reservation_expired to be published", lambda: all_published(db, order_id, 2))

        # the money arrives after all: the same two units are reserved again and sold
        await publish(stack.broker.bootstrap_servers, paid)
        await wait_for("inventory.committed to be published", lambda: all_published(db, order_id, 3))
        stock = (await client.get(f"/v1/admin/stock/{sku}", headers=admin)).json()
        assert (stock["available"], stock["reserved"], stock["sold"]) == (1, 0, 2)
        view = (await client.get(f"/v1/admin/reservations/{order_id}", headers=support)).json()
        assert [(h["from_state"], h["to_state"]) for h in view["history"]] == [
            (None, "held"),
            ("held", "expired"),
            ("expired", "committed"),
        ]

        events = await inventory_events_on_the_broker(stack.broker.bootstrap_servers, order_id, 3)
        assert [e.type for e in events] == [
            "inventory.reserved",
            "inventory.reservation_expired",
            "inventory.committed",
        ]
        assert [e.sequence for e in events] == [1, 2, 3]
        assert events[1].data["reason"] == "expired" and events[2].data["rereserved"] is True
        assert events[2].causationid == str(paid.id)

        metrics = (await client.get("/metrics")).text
        assert "handshake_inventory_expiry_sweep_last_success_timestamp_seconds" in metrics
    expired_after = REGISTRY.get_sample_value("handshake_inventory_reservations_total", {"outcome": "expired"})
    assert expired_after == expired_before + 1
