"""Events emitted and dispatched by payload class, against real PostgreSQL: the class puts its own type and topic
on the envelope, the consumer hands an event to the handler of its class and no other, and an id that is not a
UUID is a dead letter, never a crash and never a silent drop."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from handshake_shared.consumer import EventConsumer, RawMessage, RetryPolicy
from handshake_shared.db import Database, add_messaging_tables, make_metadata
from handshake_shared.envelope import build_event, parse_event
from handshake_shared.events import INVENTORY_EVENTS, PAYMENT_EVENTS
from handshake_shared.events import inventory as inv
from handshake_shared.events import payment as pay
from handshake_shared.outbox import Outbox

metadata = make_metadata()
tables = add_messaging_tables(metadata)


@pytest.fixture
async def db(stack):
    database = Database(stack.postgres.create_database(f"t_dispatch_{uuid.uuid4().hex[:10]}"))
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


def consumer_for(db: Database, handlers: dict[Any, Any]) -> EventConsumer:
    return EventConsumer(
        name=f"test-{uuid.uuid4().hex[:6]}",
        db=db,
        tables=tables,
        outbox=Outbox(tables, "order"),
        handlers=handlers,
        policy=RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01),
    )


def payment_message(event_type: str, data: dict[str, Any]) -> RawMessage:
    order_id = str(data["order_id"])
    event = build_event(service="payment", type=event_type, order_id=order_id, data=data, sequence=1)
    return RawMessage(topic=PAYMENT_EVENTS, partition=0, offset=1, key=order_id.encode(), value=event.to_bytes())


def attempt_data(**overrides: Any) -> dict[str, Any]:
    return {
        "order_id": str(uuid.uuid4()),
        "attempt_id": str(uuid.uuid4()),
        "payment_intent_id": "pi_1",
        "amount": 3470,
        "currency": "EUR",
        **overrides,
    }


async def rows(db: Database, table: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(table))).all())


async def test_emitting_a_payload_puts_its_own_type_and_topic_on_the_envelope(db) -> None:
    order_id = uuid.uuid4()
    released = inv.InventoryReservationExpired(order_id=order_id, reservation_id=uuid.uuid4(), reason="expired")
    async with db.transaction() as conn:
        event = await Outbox(tables, "inventory").emit(conn, released, order_id=order_id)
    [row] = await rows(db, tables.outbox)
    assert (row.topic, row.event_type, row.message_key) == (
        INVENTORY_EVENTS,
        "inventory.reservation_expired",
        str(order_id),
    )
    on_the_wire = parse_event(bytes(row.payload))
    assert on_the_wire == event
    assert (on_the_wire.type, on_the_wire.subject) == ("inventory.reservation_expired", str(order_id))
    assert on_the_wire.data == json.loads(released.model_dump_json())


async def test_an_abstract_payload_cannot_be_emitted(db) -> None:
    async with db.transaction() as conn:
        with pytest.raises(TypeError, match="no event type"):
            await Outbox(tables, "payment").emit(conn, pay.PaymentEvent(order_id=uuid.uuid4()), order_id=uuid.uuid4())


async def test_a_handler_map_keyed_by_class_dispatches_each_type_to_its_own_handler(db) -> None:
    seen: list[tuple[str, Any]] = []

    def recording(name: str):
        async def handle(conn, event, payload) -> None:
            seen.append((name, payload))

        return handle

    consumer = consumer_for(
        db,
        {
            pay.PaymentSucceeded: recording("succeeded"),
            pay.PaymentAuthorized: recording("authorized"),
            pay.PaymentFailed: recording("failed"),
        },
    )
    authorized = attempt_data()
    assert await consumer.handle(payment_message("payment.authorized", authorized)) == "applied"
    [(name, payload)] = seen
    # payment.authorized shares its fields with payment.succeeded, but is its own class and goes to its own handler
    assert name == "authorized" and type(payload) is pay.PaymentAuthorized
    assert payload.attempt_id == uuid.UUID(authorized["attempt_id"])
    # payment.canceled (fields of payment.failed) has no handler here: skipped from the type alone, no inbox row
    canceled = {"order_id": str(uuid.uuid4()), "attempt_id": str(uuid.uuid4())}
    assert await consumer.handle(payment_message("payment.canceled", canceled)) == "ignored"
    assert len(seen) == 1
    assert len(await rows(db, tables.inbox)) == 1


async def test_an_id_that_is_not_a_uuid_is_dead_lettered_before_any_handler_runs(db) -> None:
    called: list[Any] = []

    async def handle(conn, event, payload) -> None:
        called.append(payload)

    consumer = consumer_for(db, {pay.PaymentSucceeded: handle})
    msg = payment_message("payment.succeeded", attempt_data(attempt_id="a1"))
    labels = {"consumer": consumer.name, "topic": PAYMENT_EVENTS}
    before = REGISTRY.get_sample_value("handshake_dead_letters_total", labels) or 0
    assert await consumer.handle(msg) == "dead_lettered"
    assert called == []
    assert REGISTRY.get_sample_value("handshake_dead_letters_total", labels) == before + 1
    [dead] = await rows(db, tables.dead_letters)
    assert dead.attempts == 1 and "attempt_id" in dead.error and bytes(dead.payload) == msg.value
    [queued] = await rows(db, tables.outbox)
    assert queued.topic == f"{PAYMENT_EVENTS}.dlq"
    # the dead letter is the message's one outcome: delivered again, it is not applied either
    assert await consumer.handle(msg) == "dead_lettered"
    assert called == []
