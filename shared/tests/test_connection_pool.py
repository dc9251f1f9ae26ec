"""The connection pool: connections are kept (no backend opened and closed per transaction), and one the
database closed while it sat idle in the pool is found out before a transaction gets it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from handshake_shared.db import Database
from handshake_shared.locks import AdvisoryLock


@pytest.fixture
def url(stack) -> str:
    return str(stack.postgres.create_database(f"t_pool_{uuid.uuid4().hex[:10]}"))


async def backend_pid(db: Database) -> int:
    async with db.transaction() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(url: str, pid: int) -> None:
    admin = Database(url, pool_size=1)
    try:
        async with admin.transaction() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()
    finally:
        await admin.dispose()


async def test_a_burst_above_the_pool_waits_for_its_connections_instead_of_opening_more(url: str) -> None:
    db = Database(url, pool_size=2)

    async def busy() -> int:
        async with db.transaction() as conn:
            return int((await conn.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.02)"))).scalar_one())

    try:
        pids = []
        for _ in range(3):
            pids += await asyncio.gather(*(busy() for _ in range(6)))
        # eighteen transactions, six at a time, on the same two backends: none opened and closed per burst
        assert len(pids) == 18 and len(set(pids)) == 2
    finally:
        await db.dispose()


async def test_a_connection_closed_while_idle_is_replaced_before_use(url: str) -> None:
    # idle for "longer than the ping threshold" at once: every checkout after a checkin is checked
    db = Database(url, pool_size=1, idle_ping_seconds=0)
    try:
        first = await backend_pid(db)
        await terminate(url, first)  # a failover or a restart closes the pooled connection

        second = await backend_pid(db)  # no error reaches the caller

        assert second != first
    finally:
        await db.dispose()


async def test_a_connection_in_steady_use_is_not_pinged(url: str) -> None:
    db = Database(url, pool_size=1, idle_ping_seconds=3600)
    try:
        first = await backend_pid(db)
        await terminate(url, first)
        # without the ping the dead connection is handed out and its statement fails (the pool then starts
        # over): what the threshold saves is a round trip on every transaction of a busy service
        with pytest.raises(Exception):  # noqa: B017 - the driver's disconnect error, whichever it is
            await backend_pid(db)
        assert await backend_pid(db) != first
    finally:
        await db.dispose()


async def test_a_read_runs_each_statement_without_a_transaction_around_it(url: str) -> None:
    db = Database(url, pool_size=1)

    async def two_clock_readings(conn) -> tuple[object, object]:
        first = (await conn.execute(text("SELECT now()"))).scalar_one()
        await conn.execute(text("SELECT pg_sleep(0.01)"))
        return first, (await conn.execute(text("SELECT now()"))).scalar_one()

    try:
        async with db.read() as conn:
            first, second = await two_clock_readings(conn)
        # now() is the start of the transaction: a later statement sees a later one only on its own
        assert second > first
        async with db.transaction() as conn:
            first, second = await two_clock_readings(conn)
        assert second == first
        # the pooled connection went back in its ordinary mode: transactions still span their statements
        async with db.engine.connect() as conn:
            first, second = await two_clock_readings(conn)
        assert second == first
    finally:
        await db.dispose()


async def test_work_one_replica_at_a_time_is_held_by_one_process_and_free_again_when_it_ends(url: str) -> None:
    """Two replicas (two engines, as two processes have) asking at once for the scheduled reconciliation run:
    exactly one gets it; once it ends the next interval's asker gets it, whichever replica that is."""
    first, second = Database(url, pool_size=2), Database(url, pool_size=2)
    try:
        async with first.held_by_one_replica(AdvisoryLock.RECONCILIATION) as mine:
            async with second.held_by_one_replica(AdvisoryLock.RECONCILIATION) as theirs:
                assert (mine, theirs) == (True, False)
            async with second.held_by_one_replica(AdvisoryLock.GAP_SCAN) as other_work:
                assert other_work  # another key is other work
        async with second.held_by_one_replica(AdvisoryLock.RECONCILIATION) as theirs_now:
            assert theirs_now
    finally:
        await first.dispose()
        await second.dispose()
