"""The inventory app in-process against the real broker: order.events.v1 in, inventory.events.v1 out."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import select

from handshake_inventory.app import create_app
from handshake_inventory.db import messaging, reservations
from handshake_inventory.metrics import refresh_gauges
from handshake_shared.auth import issue_token
from handshake_shared.envelope import CloudEvent, build_event
from handshake_shared.events import ORDER_EVENTS
from handshake_shared.testing.fixtures import serve_in_process


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


async def test_order_placed_from_the_broker_reserves_once_and_publishes_inventory_reserved(settings, stack) -> None:
    app = create_app(settings)
    db = app.state.runtime.db
    admin = {"Authorization": f"Bearer {issue_token(settings, 'ops', ['admin'])}"}
    # SKU unique to this test: other suites' order.placed events on the shared topic must not touch it
    sku = f"MUG-{uuid.uuid4().hex[:8]}"
    order_id = str(uuid.uuid4())
    placed = build_event(
        service="order", type="order.placed", order_id=order_id, sequence=1,
        data={"order_id": order_id, "currency": "EUR", "total": 2500, "lines": [{"sku": sku, "quantity": 2}]},
    )  # fmt: skip
    # same key, so same partition and delivered after both copies: once it is in the inbox, they were handled
    marker = build_event(
        service="order", type="order.payment_requested", order_id=order_id, sequence=2,
        data={"order_id": order_id, "request_id": "r-1", "amount": 2500, "currency": "EUR"},
    )  # fmt: skip

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

        assert duplicates_seen() == duplicates_before + 1  # the second copy did arrive, and the inbox stopped it
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
        assert (await client.get("/readyz")).json()["status"] == "ok"
