"""Which consumer failures wait for the infrastructure and which are the message's, against real PostgreSQL:
only an unreachable dependency leaves a message on the broker, and only up to a cap; database timeouts are
set on every connection and count as the message's; no bound SQL value reaches a dead letter or a log."""

from __future__ import annotations

import asyncio
import traceback
import uuid

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from handshake_shared import consumer as consumer_module
from handshake_shared.consumer import (
    EventConsumer,
    InfrastructureUnavailable,
    RawMessage,
    RetryPolicy,
    is_infrastructure_error,
)
from handshake_shared.db import Database, add_messaging_tables, make_metadata
from handshake_shared.envelope import build_event
from handshake_shared.events.order import OrderPlaced
from handshake_shared.outbox import Outbox
from handshake_shared.runtime import Runtime
from handshake_shared.settings import ServiceSettings

metadata = make_metadata()
tables = add_messaging_tables(metadata)

SECRET = "4242-secret-value-never-logged"


@pytest.fixture
def url(stack) -> str:
    return stack.postgres.create_database(f"t_consume_{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def db(url):
    database = Database(url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


def consumer_for(db: Database, handler, *, max_deferrals: int = 400) -> EventConsumer:
    return EventConsumer(
        name=f"test-{uuid.uuid4().hex[:6]}",
        db=db,
        tables=tables,
        outbox=Outbox(tables, "inventory"),
        handlers={OrderPlaced: handler},
        policy=RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01, max_deferrals=max_deferrals),
    )


def placed_message() -> RawMessage:
    order_id = str(uuid.uuid4())
    event = build_event(
        service="order",
        type="order.placed",
        order_id=order_id,
        sequence=1,
        data={"order_id": order_id, "currency": "EUR", "total": 100, "lines": [{"sku": "A", "quantity": 1}]},
    )
    return RawMessage(topic="order.events.v1", partition=0, offset=1, key=order_id.encode(), value=event.to_bytes())


async def dead_letters(db: Database) -> list:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(tables.dead_letters))).all())


async def dlq_headers(db: Database) -> list[dict[str, str]]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(tables.outbox.c.headers))).scalars().all())


async def test_an_oserror_that_is_not_the_network_is_dead_lettered_not_retried_for_ever(db) -> None:
    async def handler(conn, event, payload):
        raise PermissionError(13, "Permission denied", "/var/lib/handshake/labels")

    consumer = consumer_for(db, handler)
    assert await consumer.handle(placed_message()) == "dead_lettered"
    [dead] = await dead_letters(db)
    assert dead.attempts == 2 and "PermissionError" in dead.error


async def test_an_unreachable_dependency_defers_the_message_up_to_the_cap_then_dead_letters_it(db) -> None:
    async def handler(conn, event, payload):
        raise ConnectionRefusedError(111, "Connect call failed ('10.0.0.9', 443)")

    consumer = consumer_for(db, handler, max_deferrals=2)
    msg = placed_message()
    dead_before = (
        REGISTRY.get_sample_value("handshake_dead_letters_total", {"consumer": consumer.name, "topic": msg.topic}) or 0
    )
    for _ in range(2):
        with pytest.raises(InfrastructureUnavailable):  # left on the broker, which brings it back
            await consumer.handle(msg)
        assert await dead_letters(db) == []
    assert await consumer.handle(msg) == "dead_lettered"
    [dead] = await dead_letters(db)
    assert "after 2 deferred deliveries" in dead.error and "ConnectionRefusedError" in dead.error
    assert (
        REGISTRY.get_sample_value("handshake_dead_letters_total", {"consumer": consumer.name, "topic": msg.topic})
        == dead_before + 1
    )


async def test_every_connection_gets_the_configured_database_timeouts(url) -> None:
    settings = ServiceSettings(
        database_url=url, db_statement_timeout_ms=1234, db_lock_timeout_ms=567, db_idle_in_transaction_timeout_ms=8900
    )
    for database, expected in (
        (Runtime(service="test", settings=settings, tables=tables).db, ("1234ms", "567ms", "8900ms")),
        (Database(url), ("15s", "5s", "1min")),  # the defaults
    ):
        try:
            async with database.engine.connect() as conn:
                shown = [
                    (await conn.execute(text(f"SHOW {name}"))).scalar_one()
                    for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
                ]
        finally:
            await database.dispose()
        assert tuple(shown) == expected


@pytest.mark.parametrize("limit", ["statement", "lock"])
async def test_a_statement_over_its_timeout_is_the_message_s_failure_not_an_outage(url, limit: str) -> None:
    """The database answered: the statement ran past its limit and would again. Retried within the delivery,
    then dead-lettered; never deferred for ever, which would stall the partition behind it."""
    db = Database(url, statement_timeout_ms=200 if limit == "statement" else 10_000, lock_timeout_ms=200)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    blocker = await db.engine.connect()
    try:
        await blocker.begin()
        await blocker.execute(text("LOCK TABLE outbox_sequences IN ACCESS EXCLUSIVE MODE"))
        errors: list[BaseException] = []

        async def handler(conn, event, payload):
            try:
                if limit == "statement":
                    await conn.execute(text("SELECT pg_sleep(2)"))
                else:
                    await conn.execute(text("SELECT count(*) FROM outbox_sequences"))  # waits for the lock
            except Exception as exc:
                errors.append(exc)
                raise

        consumer = consumer_for(db, handler)
        # without a lock timeout the handler would wait for the lock as long as its holder likes
        assert await asyncio.wait_for(consumer.handle(placed_message()), 60) == "dead_lettered"
        assert len(errors) == 2 and not any(is_infrastructure_error(e) for e in errors)
        [dead] = await dead_letters(db)
        assert ("57014" if limit == "statement" else "55P03") in dead.error
    finally:
        await blocker.rollback()
        await blocker.close()
        await db.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT CAST(:v AS uuid)",  # refused by the driver before it is sent, quoting the value
        "SELECT CAST(CAST(:v AS text) AS uuid)",  # refused by PostgreSQL, quoting the value
        # refused by PostgreSQL, its DETAIL quoting the whole row
        "INSERT INTO dead_letters (consumer, topic, payload, error, attempts) VALUES (:v, :v, NULL, :v, 1)",
    ],
)
async def test_no_sql_parameter_value_reaches_a_dead_letter_or_a_log_line(db, statement: str, monkeypatch) -> None:
    async def handler(conn, event, payload):
        await conn.execute(text(statement), {"v": SECRET})

    logged: list[str] = []

    class Recorder:
        def __getattr__(self, level: str):
            return lambda event, **fields: logged.append(f"{level} {event} {fields}")

    monkeypatch.setattr(consumer_module, "log", Recorder())
    consumer = consumer_for(db, handler)
    assert await consumer.handle(placed_message()) == "dead_lettered"
    [dead] = await dead_letters(db)
    [headers] = await dlq_headers(db)
    assert SECRET not in dead.error
    assert SECRET not in headers["x-dead-letter-error"]
    assert any("dead-lettered" in line for line in logged) and not any(SECRET in line for line in logged)
    assert any(s in dead.error for s in ("22000", "22P02", "23502"))  # it still says what went wrong


async def test_the_database_never_prints_bound_values_in_its_errors(db) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with db.transaction() as conn:
            await conn.execute(text("SELECT CAST(:v AS text), 1 / 0"), {"v": SECRET})
    assert caught.value.orig.sqlstate == "22012"
    assert SECRET not in "".join(traceback.format_exception(caught.value))
