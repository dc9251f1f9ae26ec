"""The order service against real PostgreSQL and the real broker, in-process."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select, text

from handshake_devstack.testing.fixtures import isolated_kafka_settings, serve_in_process
from handshake_devstack.tokens import issue_token
from handshake_order.app import create_app
from handshake_order.db import order_transitions, orders
from handshake_order.settings import OrderSettings
from handshake_shared.envelope import parse_event

CATALOGUE = {
    "reason": "test catalogue",
    "products": [
        {"sku": "MUG", "name": "Mug", "unit_price": 1250, "currency": "EUR"},
        {"sku": "TEE", "name": "T-shirt", "unit_price": 2000, "currency": "EUR"},
    ],
    "tax_rates": [{"region": "DE", "rate_bp": 1900}],
    "shipping_rates": [{"code": "standard", "amount": 495, "currency": "EUR"}],
    "coupons": [{"code": "TENOFF", "kind": "percent", "percent_bp": 1000}],
}


@pytest.fixture
def settings(stack, fresh_database) -> OrderSettings:
    return OrderSettings(database_url=fresh_database("handshake_order"), **isolated_kafka_settings(stack))


async def placed_events(bootstrap: str, order_id: str, timeout: float = 10.0) -> list:
    consumer = AIOKafkaConsumer(
        "order.events.v1", bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not found and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    if r.key == order_id.encode():
                        found.append((r, parse_event(r.value)))
    finally:
        await consumer.stop()
    return found


async def test_checkout_prices_on_server_stores_snapshot_and_publishes_order_placed(settings, stack):
    app = create_app(settings)
    admin = issue_token(settings, "ops", ["admin"])
    async with serve_in_process(app) as client:
        r = await client.put("/v1/admin/catalogue", json=CATALOGUE, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text
        body = {
            "lines": [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}],
            "region": "DE",
            "shipping_method": "standard",
            "coupon_code": "TENOFF",
        }
        browser = {"Idempotency-Key": "k-1", "Guest-Session": "b" * 43}
        r = await client.post("/v1/checkout", json=body, headers=browser)
        assert r.status_code == 202, r.text
        placed = r.json()
        # 2*1250 + 2000 = 4500; -10% = 4050; +19% tax = 770 (769.5 rounded half up); +495 shipping
        assert placed["total"] == 4050 + 770 + 495
        assert placed["currency"] == "EUR"
        order_id = placed["order_id"]

        again = await client.post("/v1/checkout", json=body, headers=browser)
        assert again.status_code == 202 and again.json() == placed
        assert again.headers["Idempotent-Replayed"] == "true"

        events = await placed_events(stack.broker.bootstrap_servers, order_id)
        assert [e.type for _, e in events] == ["order.placed"]
        record, event = events[0]
        assert event.data["total"] == placed["total"]
        assert dict(record.headers)["content-type"] == b"application/cloudevents+json"

        r = await client.get(f"/v1/orders/{order_id}", headers={"X-Order-Token": placed["lookup_token"]})
        assert r.status_code == 200 and r.json()["state"] == "draft"
        assert (await client.get(f"/v1/orders/{order_id}")).status_code == 404

    runtime = app.state.runtime
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(select(text("count(*)")).select_from(orders))).scalar() == 1
        audit = (await conn.execute(select(order_transitions.c.to_state))).scalars().all()
        assert audit == ["draft"]
    await runtime.db.dispose()


async def test_client_sent_prices_are_refused(settings):
    app = create_app(settings)
    async with serve_in_process(app) as client:
        r = await client.post(
            "/v1/checkout",
            json={
                "lines": [{"sku": "MUG", "quantity": 1, "unit_price": 1}],
                "region": "DE",
                "shipping_method": "standard",
            },
            headers={"Idempotency-Key": "k-2"},
        )
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        r = await client.post(
            "/v1/checkout",
            json={"lines": [{"sku": "MUG", "quantity": 1}], "region": "DE", "shipping_method": "standard", "total": 1},
        )
        assert r.status_code == 422
