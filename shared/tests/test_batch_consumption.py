"""Consumers take messages in batches from the real broker: each message is applied in its own transaction,
one order's events in the order they were produced, and the batch's offsets are committed once, after the
last message's database commit, so a restarted consumer starts after what was applied. Within a batch the
partitions are handled side by side, each in its own order: one order waiting does not hold up the others."""

from __future__ import annotations

import asyncio
import errno
import uuid

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from handshake_devstack.testing.fixtures import eventually, isolated_kafka_settings
from handshake_shared.consumer import EventConsumer, InfrastructureUnavailable, RawMessage, RetryPolicy
from handshake_shared.db import Database, add_messaging_tables, make_metadata
from handshake_shared.envelope import build_event
from handshake_shared.events.order import OrderPlaced
from handshake_shared.kafka import ensure_topics
from handshake_shared.outbox import Outbox
from handshake_shared.runtime import Runtime
from handshake_shared.settings import ServiceSettings

metadata = make_metadata()
tables = add_messaging_tables(metadata)
ORDERS, EVENTS_PER_ORDER = 6, 10


def placed(order_id: str, sequence: int) -> bytes:
    data = {"order_id": order_id, "currency": "EUR", "total": sequence, "lines": [{"sku": "A", "quantity": 1}]}
    return build_event(service="order", type="order.placed", order_id=order_id, sequence=sequence, data=data).to_bytes()


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_batch_is_applied_in_order_and_committed_once_after_its_transactions(stack) -> None:
    url = stack.postgres.create_database(f"t_batch_{uuid.uuid4().hex[:10]}")
    topic = f"t-batch-{uuid.uuid4().hex[:8]}"
    kafka = isolated_kafka_settings(stack)
    settings = ServiceSettings(database_url=url, kafka_max_batch_records=50, **kafka)
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 3)
    orders = [str(uuid.uuid4()) for _ in range(ORDERS)]

    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers)
    await producer.start()
    try:
        # everything is on the topic before the consumer starts: it is fetched in batches, not one by one
        for sequence in range(1, EVENTS_PER_ORDER + 1):
            for order_id in orders:
                await producer.send_and_wait(topic, key=order_id.encode(), value=placed(order_id, sequence))

        applied: dict[str, list[int]] = {order_id: [] for order_id in orders}

        async def record(conn, event, payload) -> None:
            applied[str(payload.order_id)].append(payload.total)

        runtime = Runtime(service="test", settings=settings, tables=tables)
        async with runtime.db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        consumer = runtime.consume(topic, group="batch", handlers={OrderPlaced: record})
        commits = {"consumer": consumer.name}
        commits_before = sample("handshake_consumer_offset_commits_total", commits)
        await runtime.start()
        try:
            await eventually(lambda: _done(applied), timeout=30)
        finally:
            await runtime.stop()

        # per order exactly as produced, each once
        assert applied == {order_id: list(range(1, EVENTS_PER_ORDER + 1)) for order_id in orders}
        committed = sample("handshake_consumer_offset_commits_total", commits) - commits_before
        assert 1 <= committed < ORDERS * EVENTS_PER_ORDER

        # a consumer of the same group starts after the committed batch: only the new message comes, and
        # nothing earlier is delivered again (the inbox would have stopped it, counted as a duplicate)
        marker = str(uuid.uuid4())
        await producer.send_and_wait(topic, key=marker.encode(), value=placed(marker, 1))
        applied[marker] = []
        duplicates = {"consumer": consumer.name, "type": "order.placed", "outcome": "duplicate"}
        duplicates_before = sample("handshake_events_consumed_total", duplicates)
        again = Runtime(service="test", settings=settings, tables=tables)
        again.consume(topic, group="batch", handlers={OrderPlaced: record})
        await again.start()
        try:
            await eventually(lambda: _done({marker: applied[marker]}, per_order=1), timeout=30)
        finally:
            await again.stop()
        assert sample("handshake_events_consumed_total", duplicates) == duplicates_before
        assert sum(map(len, applied.values())) == ORDERS * EVENTS_PER_ORDER + 1
    finally:
        await producer.stop()


async def _done(applied: dict[str, list[int]], per_order: int = EVENTS_PER_ORDER) -> bool:
    return all(len(seen) == per_order for seen in applied.values())


async def test_a_batch_handles_its_partitions_side_by_side_each_in_order_and_fails_as_a_whole(stack) -> None:
    """Order X's first event waits until order Y's event (another partition, later in the same batch) has been
    handled: handled one by one, X would wait for ever. X's events still apply in the order produced. Order
    Z's handler finds the database unreachable: the batch raises (no offset is committed) after X and Y are
    applied, and the redelivered batch applies Z alone while the inbox answers X's and Y's as duplicates."""
    url = stack.postgres.create_database(f"t_batch_{uuid.uuid4().hex[:10]}")
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    x, y, z = (str(uuid.uuid4()) for _ in range(3))
    applied: list[tuple[str, int]] = []
    y_handled = asyncio.Event()
    z_reachable = False

    async def record(conn, event, payload) -> None:
        order_id = str(payload.order_id)
        if (order_id, payload.total) == (x, 1):
            await y_handled.wait()
        if order_id == z and not z_reachable:
            raise OSError(errno.ECONNREFUSED, "connection refused")
        applied.append((order_id, payload.total))
        if order_id == y:
            y_handled.set()

    consumer = EventConsumer(
        name="side-by-side",
        db=db,
        tables=tables,
        outbox=Outbox(tables, "test"),
        handlers={OrderPlaced: record},
        policy=RetryPolicy(max_attempts=1, initial_backoff=0.01, max_backoff=0.01),
        in_flight=asyncio.Semaphore(4),
    )

    def message(order_id: str, partition: int, offset: int, sequence: int) -> RawMessage:
        return RawMessage(
            topic="t-side-by-side",
            partition=partition,
            offset=offset,
            key=order_id.encode(),
            value=placed(order_id, sequence),
        )

    batch = [message(x, 0, 10, 1), message(z, 2, 30, 1), message(x, 0, 11, 2), message(y, 1, 20, 1)]
    try:
        # bounded only so that a consumer handling one message at a time fails here instead of hanging
        async with asyncio.timeout(30):
            try:
                await consumer.handle_batch(batch)
                raise AssertionError("a batch with an unreachable database behind one message must not complete")
            except InfrastructureUnavailable:
                pass
        assert applied == [(y, 1), (x, 1), (x, 2)]

        z_reachable = True
        async with asyncio.timeout(30):
            await consumer.handle_batch(batch)
        assert applied == [(y, 1), (x, 1), (x, 2), (z, 1)]
        async with db.engine.connect() as conn:
            inbox = await conn.scalar(select(func.count()).select_from(tables.inbox))
        assert inbox == 4
    finally:
        await db.dispose()


async def test_handlers_side_by_side_never_wait_on_each_other_for_connections(stack) -> None:
    """A handler holds its transaction's connection and may open short transactions of its own (payment's
    phases do). Six partitions side by side on a pool of eight would each hold one connection and wait for a
    second that never comes free; the runtime lets a quarter of the pool's worth of messages in at once, so
    all six apply, two at a time."""
    url = stack.postgres.create_database(f"t_batch_{uuid.uuid4().hex[:10]}")
    settings = ServiceSettings(database_url=url, db_pool_size=8, **isolated_kafka_settings(stack))
    runtime = Runtime(service="test", settings=settings, tables=tables)
    async with runtime.db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    in_flight, most_in_flight, applied = 0, 0, []

    async def with_a_transaction_of_its_own(conn, event, payload) -> None:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.2)  # the others start meanwhile
        async with runtime.db.transaction() as own:
            await own.execute(select(1))
        applied.append(str(payload.order_id))
        in_flight -= 1

    consumer = runtime.consume("t-pool", group="pool", handlers={OrderPlaced: with_a_transaction_of_its_own})
    orders = [str(uuid.uuid4()) for _ in range(6)]
    batch = [
        RawMessage(topic="t-pool", partition=p, offset=1, key=order_id.encode(), value=placed(order_id, 1))
        for p, order_id in enumerate(orders)
    ]
    try:
        # bounded below the pool's 30 s checkout timeout, which starved handlers would run into
        async with asyncio.timeout(20):
            await consumer.handle_batch(batch)
    finally:
        await runtime.db.dispose()
    assert sorted(applied) == sorted(orders)
    assert most_in_flight == 2
