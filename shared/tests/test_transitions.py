"""The one lifecycle writer every service uses, on a table of its own in real PostgreSQL: an allowed step moves
the state, writes its audit row and is counted; a step the table refuses, or one whose row has moved meanwhile,
writes nothing; a strict caller gets an exception instead of False."""

from __future__ import annotations

import uuid
from enum import StrEnum

import pytest
from prometheus_client import REGISTRY, Counter
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func, insert, select, update
from sqlalchemy.dialects.postgresql import UUID

from handshake_shared.db import Database
from handshake_shared.statemachine import InvalidTransition, TransitionTable
from handshake_shared.transitions import AuditedLifecycle, TransitionLost


class Door(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    LOCKED = "locked"


DOOR = TransitionTable[Door]("door", {Door.OPEN: {Door.CLOSED}, Door.CLOSED: {Door.OPEN, Door.LOCKED}})
metadata = MetaData()
doors = Table(
    "doors",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("colour", String(16)),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
door_transitions = Table(
    "door_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("door_id", UUID(as_uuid=True), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("actor", String(64)),
)
APPLIED = Counter("test_door_transitions_total", "door transitions", ["from_state", "to_state"])
REFUSED = Counter("test_door_transitions_refused_total", "door transitions refused", ["from_state", "to_state"])
STEPS = AuditedLifecycle(DOOR, rows=doors, audit=door_transitions, subject="door_id", applied=APPLIED, refused=REFUSED)


def counted(name: str, current: str, target: str) -> float:
    return REGISTRY.get_sample_value(name, {"from_state": current, "to_state": target}) or 0.0


@pytest.fixture
async def db(stack):
    database = Database(str(stack.postgres.create_database(f"t_transitions_{uuid.uuid4().hex[:10]}")), pool_size=2)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


async def a_door(db: Database, state: Door) -> uuid.UUID:
    door = uuid.uuid4()
    async with db.transaction() as conn:
        await conn.execute(insert(doors).values(id=door, state=state))
        await STEPS.record(conn, door, None, state, reason="built", audit={"actor": "builder"})
    return door


async def seen(db: Database, door: uuid.UUID) -> tuple[str, str | None, list[tuple[str | None, str, str]]]:
    async with db.read() as conn:
        row = (await conn.execute(select(doors).where(doors.c.id == door))).one()
        trail = (
            await conn.execute(
                select(door_transitions.c.from_state, door_transitions.c.to_state, door_transitions.c.reason)
                .where(door_transitions.c.door_id == door)
                .order_by(door_transitions.c.id)
            )
        ).all()
    return row.state, row.colour, [tuple(t) for t in trail]


async def test_an_allowed_step_moves_the_state_writes_its_audit_row_and_is_counted(db: Database) -> None:
    door = await a_door(db, Door.OPEN)
    before = counted("test_door_transitions_total", "open", "closed")
    async with db.transaction() as conn:
        moved = await STEPS.move(
            conn, door, Door.OPEN, Door.CLOSED, reason="draught", columns={"colour": "red"}, audit={"actor": "ann"}
        )
    assert moved
    assert await seen(db, door) == ("closed", "red", [(None, "open", "built"), ("open", "closed", "draught")])
    assert counted("test_door_transitions_total", "open", "closed") - before == 1


async def test_a_step_the_table_refuses_writes_nothing_and_is_counted_as_refused(db: Database) -> None:
    door = await a_door(db, Door.OPEN)
    before = counted("test_door_transitions_refused_total", "open", "locked")
    async with db.transaction() as conn:
        assert not await STEPS.move(conn, door, Door.OPEN, Door.LOCKED, reason="night")
    async with db.transaction() as conn:
        with pytest.raises(InvalidTransition):
            await STEPS.move(conn, door, Door.OPEN, Door.LOCKED, reason="night", strict=True)
    assert await seen(db, door) == ("open", None, [(None, "open", "built")])
    assert counted("test_door_transitions_refused_total", "open", "locked") - before == 2


async def test_a_row_that_moved_meanwhile_is_not_moved_again(db: Database) -> None:
    """Compare-and-set: a writer that read `open` and lost the race to another writer changes nothing."""
    door = await a_door(db, Door.OPEN)
    async with db.transaction() as conn:
        await conn.execute(update(doors).where(doors.c.id == door).values(state=Door.CLOSED))
    async with db.transaction() as conn:
        assert not await STEPS.move(conn, door, Door.OPEN, Door.CLOSED, reason="late", columns={"colour": "blue"})
    async with db.transaction() as conn:
        with pytest.raises(TransitionLost):
            await STEPS.move(conn, door, Door.OPEN, Door.CLOSED, reason="late", strict=True)
    assert await seen(db, door) == ("closed", None, [(None, "open", "built")])


async def test_an_audit_row_the_table_does_not_allow_is_refused_too(db: Database) -> None:
    door = await a_door(db, Door.LOCKED)
    async with db.transaction() as conn:
        with pytest.raises(InvalidTransition):
            await STEPS.record(conn, door, Door.LOCKED, Door.OPEN, reason="forced")
    assert (await seen(db, door))[2] == [(None, "locked", "built")]
