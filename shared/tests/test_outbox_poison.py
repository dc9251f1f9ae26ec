"""An outbox row the broker can never take (too large, an unknown topic, no ACL) against real PostgreSQL and
the real broker: it holds back only its own order, is parked after bounded attempts, and the lag gauges
keep moving; a broker outage charges no row."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError
from prometheus_client import REGISTRY
from sqlalchemy import select

from handshake_devstack.testing.events import payload_on, producer_send
from handshake_devstack.testing.fixtures import eventually
from handshake_shared.db import Database, add_messaging_tables, make_metadata
from handshake_shared.envelope import build_event, parse_event
from handshake_shared.kafka import ensure_topics
from handshake_shared.outbox import Outbox, OutboxRelay

metadata = make_metadata()
tables = add_messaging_tables(metadata)
ob = tables.outbox

# over the producer's max_request_size (1 MiB): refused before it leaves the client, on every attempt
TOO_LARGE = 2 * 1024 * 1024


@pytest.fixture
async def db(stack):
    url = stack.postgres.create_database(f"t_poison_{uuid.uuid4().hex[:10]}")
    database = Database(url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
async def producer(stack):
    p = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers, acks="all")
    await p.start()
    yield p
    await p.stop()


async def emit(db: Database, topic: str, order_id: str, i: int) -> None:
    async with db.transaction() as conn:
        await Outbox(tables, "order").emit(conn, payload_on(topic, "order.test")(i=i), order_id=order_id)


async def emit_too_large(db: Database, topic: str, order_id: str) -> None:
    async with db.transaction() as conn:
        outbox = Outbox(tables, "order")
        sequence = await outbox.next_sequence(conn, order_id)
        event = build_event(
            service="order",
            type="order.test",
            order_id=order_id,
            sequence=sequence,
            data={"i": -1, "blob": "x" * TOO_LARGE},
        )
        await outbox.put_raw(
            conn,
            topic=topic,
            key=order_id,
            event_id=event.id,
            event_type=event.type,
            sequence=sequence,
            payload=event.to_bytes(),
            headers=event.kafka_headers(),
        )


async def rows_of(db: Database, order_id: str) -> list:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(ob).where(ob.c.message_key == order_id).order_by(ob.c.id))).all())


async def read_topic(bootstrap: str, topic: str, expected: int) -> dict[str, list[int]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen: dict[str, list[int]] = defaultdict(list)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        count = 0
        while count < expected and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    event = parse_event(record.value)
                    seen[event.subject].append(event.data["i"])
                    count += 1
        for records in (await consumer.getmany(timeout_ms=500)).values():  # a little longer, for duplicates
            for record in records:
                event = parse_event(record.value)
                seen[event.subject].append(event.data["i"])
    finally:
        await consumer.stop()
    return dict(seen)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_row_the_broker_refuses_holds_back_only_its_order_and_is_parked(db, stack, producer) -> None:
    topic = f"test.poison.{uuid.uuid4().hex[:8]}"
    service = f"poison-{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 3)
    poisoned, others = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
    await emit_too_large(db, topic, poisoned)
    await emit(db, topic, poisoned, 1)  # committed after the refused row: must never overtake it
    relay = OutboxRelay(
        db,
        tables,
        producer_send(producer),
        service=service,
        batch_size=50,
        max_attempts=3,
        retry_max_backoff_seconds=0.01,
    )

    rounds = 0
    while (await rows_of(db, poisoned))[0].parked_at is None:
        rounds += 1
        assert rounds < 50, "the refused row was never parked"
        for order_id in others:
            await emit(db, topic, order_id, rounds)
        # no round fails for everyone: each publishes every other order's new event at once
        assert await relay.publish_once() == len(others)
        await asyncio.sleep(0.02)  # past the refused row's backoff, so it is tried again

    refused, held = await rows_of(db, poisoned)
    assert refused.attempts == 3 and "MessageSizeTooLargeError" in refused.last_error
    assert held.published_at is None and held.attempts == 0  # never sent: nothing overtook the refused row
    assert sample("handshake_outbox_rows_parked_total", service=service, topic=topic) == 1
    assert sample("handshake_outbox_refused_total", service=service, topic=topic) == 3

    # parked: the order stays held round after round, the others keep flowing
    for order_id in others:
        await emit(db, topic, order_id, rounds + 1)
    assert await relay.publish_once() == len(others)
    assert await relay.publish_once() == 0
    assert (await rows_of(db, poisoned))[0].attempts == 3

    seen = await read_topic(stack.broker.bootstrap_servers, topic, expected=len(others) * (rounds + 1))
    assert poisoned not in seen
    assert {o: seen[o] for o in others} == {o: list(range(1, rounds + 2)) for o in others}


async def test_lag_gauges_move_while_a_refused_row_waits(db, stack, producer) -> None:
    """Every round fails for the refused row, yet the outbox's age and size are read after each round, so the
    lag alert sees a row that is not going out (and the parked gauge once it is parked)."""
    topic = f"test.poison.{uuid.uuid4().hex[:8]}"
    service = f"lag-{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 1)
    await emit_too_large(db, topic, str(uuid.uuid4()))
    relay = OutboxRelay(
        db,
        tables,
        producer_send(producer),
        service=service,
        idle_poll_seconds=0.05,
        max_attempts=4,
        retry_max_backoff_seconds=0.2,
    )
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _true(sample("handshake_outbox_pending", service=service) == 1))
        first_age = await eventually(lambda: _true(sample("handshake_outbox_oldest_pending_seconds", service=service)))
        await eventually(lambda: _true(sample("handshake_outbox_oldest_pending_seconds", service=service) > first_age))
        await eventually(lambda: _true(sample("handshake_outbox_parked", service=service) == 1))
        assert not task.done()
    finally:
        relay.stop()
        await asyncio.wait_for(task, 20)


async def _true(value):
    return value


async def test_a_key_whose_send_never_answers_does_not_hold_up_the_others(db, stack, producer) -> None:
    """A topic the client cannot find (auto-create off) keeps a send waiting for metadata until its request
    timeout. The round does not wait for it: other orders go out, that order waits, and the late answer,
    an unknown topic, is charged to its row in a later round."""
    topic = f"test.poison.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.broker.bootstrap_servers, [topic], 1)
    stuck, other = str(uuid.uuid4()), str(uuid.uuid4())
    await emit(db, topic, stuck, 0)
    await emit(db, topic, stuck, 1)
    await emit(db, topic, other, 0)
    real_send = producer_send(producer)
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    calls: list[bytes] = []

    async def send(topic_: str, key: bytes, value: bytes, headers: dict[str, str]):
        calls.append(key)
        if key == stuck.encode():
            await answer  # the client still looking for the topic's partitions
        return await real_send(topic_, key, value, headers)

    relay = OutboxRelay(db, tables, send, service="shared-test", slow_send_seconds=0.2, retry_max_backoff_seconds=60)
    assert await relay.publish_once() == 1  # the other order, while the stuck one is still unanswered
    await emit(db, topic, other, 1)
    assert await relay.publish_once() == 1
    assert calls.count(stuck.encode()) == 1  # not sent again while its first send is unanswered

    answer.set_exception(UnknownTopicOrPartitionError())
    await eventually(lambda: _true(all(task.done() for task, _ in relay._inflight.values())))
    assert await relay.publish_once() == 0
    first, second = await rows_of(db, stuck)
    assert (first.attempts, second.attempts) == (1, 0) and "UnknownTopicOrPartition" in first.last_error
    assert first.next_attempt_at is not None  # the order waits, whole, before its row is tried again
    assert first.published_at is None and second.published_at is None


async def test_a_broker_outage_charges_no_row(db, stack) -> None:
    """Everything fails while the broker is away: the round fails and the relay backs off, but no row is
    charged, so no row is parked for an outage the outbox exists to absorb. A client that cannot fetch
    metadata reports every topic as unknown: that too is the broker's fault when the broker does not answer."""
    topic = f"test.poison.{uuid.uuid4().hex[:8]}"
    order_id = str(uuid.uuid4())
    await emit(db, topic, order_id, 0)
    failing: list[Exception] = []

    async def send(topic_: str, key: bytes, value: bytes, headers: dict[str, str]):
        raise failing[-1]

    async def broker_reachable() -> bool:
        return False

    relay = OutboxRelay(db, tables, send, service="shared-test", max_attempts=2, broker_reachable=broker_reachable)
    for error in (KafkaConnectionError("connection refused"), UnknownTopicOrPartitionError()):
        failing.append(error)
        for _ in range(3):
            with pytest.raises(RuntimeError, match="not acknowledged"):
                await relay.publish_once()
    [row] = await rows_of(db, order_id)
    assert (row.attempts, row.parked_at, row.next_attempt_at, row.published_at) == (0, None, None, None)
    assert "UnknownTopicOrPartition" in row.last_error
