"""Outbox relay and inbox consumer against real PostgreSQL and the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import asyncpg
import pytest
import sqlalchemy.event
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from handshake_devstack.testing.events import payload_on, producer_send
from handshake_devstack.testing.fixtures import eventually
from handshake_shared.consumer import EventConsumer, RawMessage, RetryPolicy
from handshake_shared.db import Database, add_messaging_tables, make_metadata
from handshake_shared.envelope import parse_event
from handshake_shared.events.order import OrderPlaced
from handshake_shared.kafka import ensure_topics
from handshake_shared.loops import LoopState
from handshake_shared.outbox import Outbox, OutboxRelay

metadata = make_metadata()
tables = add_messaging_tables(metadata)


@pytest.fixture
async def db(stack):
    url = stack.postgres.create_database(f"t_shared_{uuid.uuid4().hex[:10]}")
    database = Database(url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


async def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < expected and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(records)
        # a little longer, to catch duplicates
        for records in (await consumer.getmany(timeout_ms=500)).values():
            out.extend(records)
    finally:
        await consumer.stop()
    return out


async def test_two_relay_replicas_publish_everything_once_and_never_reorder_an_order(db, stack):
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 3)
    outbox = Outbox(tables, "order")
    orders = [str(uuid.uuid4()) for _ in range(8)]

    async def write(order_id: str, n: int) -> None:
        for i in range(n):
            async with db.transaction() as conn:
                await outbox.emit(conn, payload_on(topic, "order.test")(i=i), order_id=order_id)

    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers, acks="all")
    await producer.start()
    relays = [
        OutboxRelay(db, tables, producer_send(producer), service="order", batch_size=7, idle_poll_seconds=0.05)
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        await asyncio.gather(*(write(o, 15) for o in orders))
        records = await read_all(stack.broker.bootstrap_servers, topic, expected=len(orders) * 15)
    finally:
        for r in relays:
            r.stop()
        await asyncio.gather(*tasks)
        await producer.stop()

    per_order: dict[str, list[int]] = defaultdict(list)
    for record in records:
        event = parse_event(record.value)
        assert record.key == event.subject.encode()
        per_order[event.subject].append(event.data["i"])
    assert set(per_order) == set(orders)
    for seen in per_order.values():
        assert seen == list(range(15))  # all of them, once each, in commit order
    async with db.engine.connect() as conn:
        unpublished = await conn.execute(select(func.count()).where(tables.outbox.c.published_at.is_(None)))
        assert unpublished.scalar() == 0


async def test_a_commit_during_a_round_brings_the_next_one_and_a_round_that_published_looks_no_further(db, stack):
    """The relay is woken by commits, not by its own sends: an event committed while a round is sending is
    published by the next round at once (its idle poll is far away), and a round that published what there was
    is not followed by one that looks again and finds nothing (three statements and a transaction each)."""
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 1)
    outbox = Outbox(tables, "order")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    async def write(order_id: str) -> None:
        async with db.transaction() as conn:
            await outbox.emit(conn, payload_on(topic, "order.test")(i=1), order_id=order_id)

    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers, acks="all")
    await producer.start()
    real_send = producer_send(producer)

    async def send_committing_the_second(topic: str, key: bytes, value: bytes, headers: dict[str, str]):
        if key == first.encode():
            await write(second)  # after the round's selection: only a wake brings it out before the idle poll
        return await real_send(topic, key, value, headers)

    relay = OutboxRelay(db, tables, send_committing_the_second, service="shared-test", idle_poll_seconds=60)
    rounds = 0
    publish_once = relay.publish_once

    async def counted() -> int:
        nonlocal rounds
        rounds += 1
        return await publish_once()

    relay.publish_once = counted  # type: ignore[method-assign]
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _waiting(relay), timeout=10)
        rounds = 0
        await write(first)
        records = await read_all(stack.broker.bootstrap_servers, topic, expected=2, timeout=20)
        assert [parse_event(r.value).subject for r in records] == [first, second]
        await eventually(lambda: _waiting(relay), timeout=10)
        assert rounds == 2  # one for each commit, none to find the outbox empty
    finally:
        relay.stop()
        await asyncio.wait_for(task, 20)
        await producer.stop()


async def _waiting(relay: OutboxRelay) -> bool:
    return relay.loop.state == LoopState.WAITING


async def test_an_order_whose_send_outlasts_its_round_is_left_alone_by_the_other_replica(db, stack):
    """Replica A's send of an order's first event is still unanswered when A's round ends, and the round's
    commit releases its bucket lock. Replica B's next round can lock that bucket, but must leave the order to A
    until A has collected the answer: else B sends the event a second time, and B's later events of the order
    race A's late one to the topic."""
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 1)
    outbox = Outbox(tables, "order")
    order_id = str(uuid.uuid4())
    async with db.transaction() as conn:
        for i in range(2):
            await outbox.emit(conn, payload_on(topic, "order.test")(i=i), order_id=order_id)

    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers, acks="all")
    await producer.start()
    real_send = producer_send(producer)
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def unanswered_send(topic_: str, key: bytes, value: bytes, headers: dict[str, str]):
        await answer  # the broker has not answered yet
        return await real_send(topic_, key, value, headers)

    replica_a = OutboxRelay(db, tables, unanswered_send, service="shared-test", slow_send_seconds=0.1)
    replica_b = OutboxRelay(db, tables, real_send, service="shared-test")
    try:
        assert await replica_a.publish_once() == 0  # its round is over, the order's first send still out
        assert await replica_b.publish_once() == 0  # nothing of that order is B's to send
        answer.set_result(None)
        await asyncio.gather(*(task for task, _ in replica_a._inflight.values()))
        assert await replica_a.publish_once() == 2  # the late answer marked, then the order's next event
        assert await replica_b.publish_once() == 0
        records = await read_all(stack.broker.bootstrap_servers, topic, expected=2)
    finally:
        await producer.stop()

    assert [parse_event(record.value).data["i"] for record in records] == [0, 1]  # once each, in order


async def test_an_order_held_by_a_replica_that_stops_with_its_send_out_goes_to_another_replica(db, stack):
    """Replica A stops while an order's send is still unanswered, so nobody will record the answer: the hold A
    put on the order runs out, and replica B publishes the order's events, all of them, in order."""
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 1)
    outbox = Outbox(tables, "order")
    order_id = str(uuid.uuid4())
    async with db.transaction() as conn:
        for i in range(2):
            await outbox.emit(conn, payload_on(topic, "order.test")(i=i), order_id=order_id)

    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers, acks="all")
    await producer.start()
    real_send = producer_send(producer)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def unanswered_send(topic_: str, key: bytes, value: bytes, headers: dict[str, str]):
        await never
        return await real_send(topic_, key, value, headers)

    # short rounds and pauses, so the hold (longer than both) runs out soon after A stops
    replica_a = OutboxRelay(
        db,
        tables,
        unanswered_send,
        service="shared-test",
        slow_send_seconds=0.1,
        publish_timeout_seconds=0.5,
        max_backoff_seconds=0.2,
        idle_poll_seconds=0.05,
    )
    replica_b = OutboxRelay(db, tables, real_send, service="shared-test")
    try:
        replica_a.loop.start()
        await eventually(lambda: _value(replica_a._inflight))
        await replica_a.loop.stopped()
        assert await eventually(replica_b.publish_once) == 2
        records = await read_all(stack.broker.bootstrap_servers, topic, expected=2)
    finally:
        await producer.stop()

    assert [parse_event(record.value).data["i"] for record in records] == [0, 1]


async def _value(value):
    return value


async def test_a_failed_send_holds_back_the_rest_of_that_order_so_nothing_overtakes_it(db, stack):
    """The broker refuses an order's first event once (enqueue error, then a failed delivery). Its later
    events must not reach the topic before it: a consumer would apply, say, order.paid before
    order.cancelled. Another order in the same batch is not held up."""
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 1)
    outbox = Outbox(tables, "order")
    held, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with db.transaction() as conn:
        for i in range(3):
            await outbox.emit(conn, payload_on(topic, "order.test")(i=i), order_id=held)
        await outbox.emit(conn, payload_on(topic, "order.test")(i=0), order_id=other)

    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers, acks="all")
    await producer.start()
    real_send = producer_send(producer)
    refusals = ["enqueue", "delivery"]

    async def flaky_send(topic_: str, key: bytes, value: bytes, headers: dict[str, str]):
        if key == held.encode() and parse_event(value).data["i"] == 0 and refusals:
            how = refusals.pop(0)
            if how == "enqueue":
                raise ConnectionError("producer buffer full")
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("delivery timed out"))
            return failed
        return await real_send(topic_, key, value, headers)

    relay = OutboxRelay(db, tables, flaky_send, service="shared-test", batch_size=10, idle_poll_seconds=0.05)
    try:
        for expected_error in ("producer buffer full", "delivery timed out"):
            with pytest.raises(RuntimeError, match=expected_error):
                await relay.publish_once()
        assert await relay.publish_once() == 3
        records = await read_all(stack.broker.bootstrap_servers, topic, expected=4)
    finally:
        await producer.stop()

    seen: dict[str, list[int]] = defaultdict(list)
    for record in records:
        event = parse_event(record.value)
        seen[event.subject].append(event.data["i"])
    assert seen == {held: [0, 1, 2], other: [0]}  # in order, once each: nothing of the held order went early


async def test_a_database_outage_while_the_relay_is_idle_does_not_end_it(db, stack):
    """The outage starts right after an empty poll, before the relay reads its lag: the relay backs off
    and then publishes what was written once the database is back; it never stops for good."""
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 1)
    name = db.engine.url.database
    outage = asyncio.Event()

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(stack.postgres.url("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers, acks="all")
    await producer.start()
    relay = OutboxRelay(
        db, tables, producer_send(producer), service="shared-test", batch_size=10, idle_poll_seconds=0.05
    )
    poll = relay.publish_once

    async def poll_then_fail() -> int:
        published = await poll()
        if published == 0 and not outage.is_set():
            outage.set()
            await admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        return published

    relay.publish_once = poll_then_fail

    def failed_rounds() -> float:
        return REGISTRY.get_sample_value("handshake_outbox_publish_errors_total", {"service": "shared-test"}) or 0.0

    failed_before = failed_rounds()
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(outage.wait(), 10)
        for _ in range(100):
            if failed_rounds() - failed_before >= 2:
                break
            await asyncio.sleep(0.05)
        assert failed_rounds() - failed_before >= 2, "the relay did not keep retrying through the outage"
        assert not task.done(), "the relay ended during a database outage"
        await admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        order_id = str(uuid.uuid4())
        async with db.transaction() as conn:
            await Outbox(tables, "order").emit(conn, payload_on(topic, "order.test")(i=1), order_id=order_id)
        records = await read_all(stack.broker.bootstrap_servers, topic, expected=1)
        assert [parse_event(r.value).subject for r in records] == [order_id]
    finally:
        await admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        relay.stop()
        await asyncio.wait_for(task, 20)  # ends cleanly, without the outage's error
        await producer.stop()


def consumer_for(db: Database, handler, name: str = "test-consumer") -> EventConsumer:
    return EventConsumer(
        name=name,
        db=db,
        tables=tables,
        outbox=Outbox(tables, "inventory"),
        handlers={OrderPlaced: handler},
        policy=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02),
    )


def placed_message(order_id: str) -> RawMessage:
    from handshake_shared.envelope import build_event

    event = build_event(
        service="order",
        type="order.placed",
        order_id=order_id,
        sequence=1,
        data={"order_id": order_id, "currency": "EUR", "total": 100, "lines": [{"sku": "A", "quantity": 1}]},
    )
    return RawMessage(topic="order.events.v1", partition=0, offset=1, key=order_id.encode(), value=event.to_bytes())


async def test_a_redelivered_event_is_applied_once(db):
    applied: list[str] = []

    async def handler(conn, event, payload):
        applied.append(payload.order_id)

    consumer = consumer_for(db, handler)
    msg = placed_message(str(uuid.uuid4()))
    assert await consumer.handle(msg) == "applied"
    assert await consumer.handle(msg) == "duplicate"
    assert len(applied) == 1


async def test_an_event_type_the_consumer_does_not_handle_is_skipped_without_touching_the_database(db):
    async def handler(conn, event, payload):
        raise AssertionError("never called")

    consumer = consumer_for(db, handler)
    order_id = str(uuid.uuid4())
    from handshake_shared.envelope import build_event

    event = build_event(
        service="order",
        type="order.payment_session_opened",
        order_id=order_id,
        sequence=2,
        data={"order_id": order_id, "hold_seconds": 900},
    )
    msg = RawMessage(topic="order.events.v1", partition=0, offset=2, key=order_id.encode(), value=event.to_bytes())
    checkouts: list[object] = []
    listen = sqlalchemy.event.listen
    listen(db.engine.sync_engine.pool, "checkout", lambda *args: checkouts.append(args))

    # skipped, and skipped again when the broker brings it back: nothing to do twice
    assert [await consumer.handle(msg), await consumer.handle(msg)] == ["ignored", "ignored"]

    assert checkouts == []  # not even a connection was taken from the pool
    async with db.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(tables.inbox))).scalar_one() == 0


async def test_a_failing_handler_is_retried_then_dead_lettered_with_its_effects_rolled_back(db):
    attempts = 0

    async def handler(conn, event, payload):
        nonlocal attempts
        attempts += 1
        await Outbox(tables, "inventory").emit(
            conn, payload_on("inventory.events.v1", "x.y")(), order_id=payload.order_id
        )
        raise RuntimeError("database constraint says no")

    consumer = consumer_for(db, handler)
    msg = placed_message(str(uuid.uuid4()))
    assert await consumer.handle(msg) == "dead_lettered"
    assert attempts == 3
    async with db.engine.connect() as conn:
        dead = (await conn.execute(select(tables.dead_letters))).one()
        assert dead.attempts == 3 and "database constraint says no" in dead.error and dead.payload == msg.value
        topics = (await conn.execute(select(tables.outbox.c.topic))).scalars().all()
        assert topics == ["order.events.v1.dlq"]  # the failed attempts' events were rolled back
    # redelivery after dead-lettering does not run the handler again
    assert await consumer.handle(msg) == "duplicate"


async def test_unparseable_message_is_dead_lettered_without_retries(db):
    async def handler(conn, event, payload):
        raise AssertionError("never called")

    consumer = consumer_for(db, handler)
    msg = RawMessage(topic="order.events.v1", partition=2, offset=7, key=b"k", value=b"{not json")
    assert await consumer.handle(msg) == "dead_lettered"
    async with db.engine.connect() as conn:
        dead = (await conn.execute(select(tables.dead_letters))).one()
        assert dead.attempts == 1 and dead.partition == 2 and dead.kafka_offset == 7
