"""The order database fails while a payment fact is being applied: the money is never lost.

A database that is down makes the consumer retry and then leave the message on the broker (never
dead-lettered), so it is applied exactly once when the database returns. A write that keeps failing
for another reason is dead-lettered, and the order is flagged needs_review for a human."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from handshake_devstack.testing.fixtures import isolated_kafka_settings
from handshake_order.db import messaging, order_transitions, orders
from handshake_order.settings import OrderSettings
from handshake_shared.envelope import build_event

TOTAL = 2500 + 475 + 495


@pytest.fixture
def settings(stack, fresh_database) -> OrderSettings:
    return OrderSettings(
        database_url=fresh_database("handshake_order"),
        consumer_initial_backoff_seconds=0.05,
        consumer_max_backoff_seconds=0.5,
        **isolated_kafka_settings(stack),
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def admin(stack, sql: str) -> None:
    conn = await asyncpg.connect(stack.postgres.url("postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pending_order(shop) -> str:
    order_id = (await shop.checkout(key=str(uuid.uuid4()))).json()["order_id"]
    await shop.reserve_and_open_payment(order_id)
    return order_id


def succeeded(order_id: str) -> dict:
    return {
        "order_id": order_id,
        "attempt_id": "00000000-0000-4000-8000-0000000000a1",
        "payment_intent_id": "pi_1",
        "amount": TOTAL,
        "currency": "eur",
    }


async def test_payment_applied_exactly_once_after_the_database_comes_back(shop, stack, settings):
    order_id = await pending_order(shop)
    db_name = settings.database_url.get_secret_value().rsplit("/", 1)[1]
    retries_before = sample("handshake_event_handler_retries_total", consumer="order.payment-events")
    deferred_before = sample(
        "handshake_events_consumed_total", consumer="order.payment-events", type="payment.succeeded", outcome="deferred"
    )

    await admin(stack, f'ALTER DATABASE "{db_name}" WITH ALLOW_CONNECTIONS false')
    await admin(stack, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}'")
    try:
        event = build_event(
            service="payment", type="payment.succeeded", order_id=order_id, data=succeeded(order_id), sequence=99
        )
        producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                "payment.events.v1",
                event.to_bytes(),
                key=order_id.encode(),
                headers=[(k, v.encode()) for k, v in event.kafka_headers().items()],
            )
        finally:
            await producer.stop()
        # the consumer keeps trying, and gives the message back to the broker rather than dead-lettering it
        deadline = time.monotonic() + 30
        while (
            sample(
                "handshake_events_consumed_total",
                consumer="order.payment-events",
                type="payment.succeeded",
                outcome="deferred",
            )
            <= deferred_before
        ):
            assert time.monotonic() < deadline, "the consumer never deferred the message"
            await asyncio.sleep(0.1)
        assert sample("handshake_event_handler_retries_total", consumer="order.payment-events") > retries_before
    finally:
        await admin(stack, f'ALTER DATABASE "{db_name}" WITH ALLOW_CONNECTIONS true')

    deadline = time.monotonic() + 30
    while (await shop.order(order_id))["state"] != "fulfillment_pending" and (await shop.order(order_id))[
        "state"
    ] != "paid":
        assert time.monotonic() < deadline, "payment never applied after the database came back"
        await asyncio.sleep(0.2)
    async with shop.runtime.db.engine.connect() as conn:
        paid_rows = await conn.execute(
            select(func.count())
            .select_from(order_transitions)
            .where(order_transitions.c.order_id == uuid.UUID(order_id), order_transitions.c.to_state == "paid")
        )
        assert paid_rows.scalar_one() == 1
        paid_events = await conn.execute(
            select(func.count()).select_from(messaging.outbox).where(messaging.outbox.c.event_type == "order.paid")
        )
        assert paid_events.scalar_one() == 1
        assert (await conn.execute(select(func.count()).select_from(messaging.dead_letters))).scalar_one() == 0


async def test_a_payment_fact_that_cannot_be_written_is_dead_lettered_and_the_order_flagged(shop):
    order_id = await pending_order(shop)
    async with shop.runtime.db.transaction() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION refuse_paid() RETURNS trigger AS $$ BEGIN "
                "IF NEW.state = 'paid' THEN RAISE EXCEPTION 'simulated write failure'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
        )
        await conn.execute(
            text("CREATE TRIGGER refuse_paid BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION refuse_paid()")
        )

    assert await shop.deliver("payment.succeeded", order_id, succeeded(order_id)) == "dead_lettered"

    view = await shop.order(order_id)
    assert view["state"] == "needs_review"
    assert any(n["kind"] == "dead-letter" and "payment.succeeded" in n["detail"] for n in view["notes"])
    async with shop.runtime.db.engine.connect() as conn:
        dead = (await conn.execute(select(messaging.dead_letters))).one()
        assert dead.event_type == "payment.succeeded" and "simulated write failure" in dead.error
        topics = (await conn.execute(select(messaging.outbox.c.topic, messaging.outbox.c.event_type))).all()
        assert ("payment.events.v1.dlq", "payment.succeeded") in topics
        assert ("order.events.v1", "order.needs_review") in topics
        assert (await conn.execute(select(orders.c.state))).scalar_one() == "needs_review"


async def test_a_stock_fact_that_cannot_be_written_is_dead_lettered_and_the_paid_order_flagged(shop):
    """Money is held for a paid order: losing inventory's answer must not leave it waiting unseen."""
    order_id = await pending_order(shop)
    assert await shop.deliver("payment.succeeded", order_id, succeeded(order_id)) == "applied"
    async with shop.runtime.db.transaction() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION refuse_fulfilment() RETURNS trigger AS $$ BEGIN "
                "IF NEW.state = 'fulfillment_pending' THEN RAISE EXCEPTION 'simulated write failure'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_fulfilment BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION refuse_fulfilment()"
            )
        )

    committed = {"order_id": order_id, "reservation_id": "00000000-0000-4000-8000-0000000000c1"}
    assert await shop.deliver("inventory.committed", order_id, committed) == "dead_lettered"

    view = await shop.order(order_id)
    assert view["state"] == "needs_review"
    assert any(n["kind"] == "dead-letter" and "inventory.committed" in n["detail"] for n in view["notes"])
    async with shop.runtime.db.engine.connect() as conn:
        topics = (await conn.execute(select(messaging.outbox.c.topic, messaging.outbox.c.event_type))).all()
        assert ("inventory.events.v1.dlq", "inventory.committed") in topics
