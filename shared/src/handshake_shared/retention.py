"""Bounded growth: one background loop per process deletes (or scrubs) rows nobody needs any more.

Each job works in batches of at most `batch_size` rows, each batch its own short transaction, so no statement
holds locks or a snapshot for long and replication never sees one huge DELETE. Batches pick their rows with
FOR UPDATE SKIP LOCKED: several replicas run the same jobs side by side without waiting on each other, and a
row the relay or a handler holds is simply left for the next round.

The messaging tables' jobs are built here from the shared settings; a service adds jobs for its own tables
(`runtime.retention.add(...)`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy import ColumnElement, Table, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared.db import Database, MessagingTables, describe_error
from handshake_shared.loops import BackgroundLoop
from handshake_shared.settings import ServiceSettings

log = structlog.get_logger("retention")

RETAINED = Counter(
    "handshake_retention_rows_total",
    "Rows the retention loop deleted or scrubbed, by job",
    ["job"],
)
RETENTION_FAILURES = Counter(
    "handshake_retention_failures_total",
    "Retention batches that failed (retried next round), by job",
    ["job"],
)

# one batch: given the connection of its transaction, the row limit and the time now, do the work and say how
# many rows it touched (fewer than the limit: the job is done for this round)
Batch = Callable[[AsyncConnection, int, datetime], Awaitable[int]]


@dataclass(frozen=True)
class RetentionJob:
    name: str
    batch: Batch


def purge(
    name: str,
    table: Table,
    *,
    age_column: ColumnElement,
    keep: timedelta,
    where: Sequence[ColumnElement[bool]] = (),
    order_by: ColumnElement | None = None,
) -> RetentionJob | None:
    """Delete rows of `table` whose `age_column` is older than `keep` and that match `where`, oldest first by
    `order_by` (an indexed column; the age column by default). None when `keep` is zero: the job is off."""
    if keep <= timedelta(0):
        return None
    keys = list(table.primary_key.columns)

    async def batch(conn: AsyncConnection, limit: int, now: datetime) -> int:
        chosen = (
            select(*keys)
            .where(age_column < now - keep, *where)
            .order_by(order_by if order_by is not None else age_column)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if len(keys) == 1:
            stmt = delete(table).where(keys[0].in_(chosen.scalar_subquery()))
        else:
            stmt = delete(table).where(tuple_(*keys).in_(chosen))
        return (await conn.execute(stmt)).rowcount or 0

    return RetentionJob(name, batch)


def messaging_jobs(tables: MessagingTables, settings: ServiceSettings) -> list[RetentionJob]:
    ob, inbox, dl = tables.outbox, tables.inbox, tables.dead_letters
    jobs = [
        # only rows the broker acknowledged; an unpublished row is an event not yet sent, and a parked one waits
        # for a person. Walked in id order (the primary key), which is commit order near enough.
        purge(
            "outbox",
            ob,
            age_column=ob.c.published_at,
            keep=timedelta(hours=settings.outbox_retention_hours),
            where=[ob.c.published_at.is_not(None), ob.c.parked_at.is_(None)],
            order_by=ob.c.id,
        ),
        # An inbox row only matters while the broker can still deliver its event again; the broker deletes a
        # message after its topic's retention (7 days for the saga topics), so a row older than that guards
        # against nothing. Replays and redrives of stored events make new event ids or go through the inbox
        # afresh on purpose.
        purge("inbox", inbox, age_column=inbox.c.processed_at, keep=timedelta(days=settings.inbox_retention_days)),
        # resolved means redriven or discarded (audited in dead_letter_redrives, which is kept); open ones wait
        # for a person
        purge(
            "dead_letters",
            dl,
            age_column=dl.c.resolved_at,
            keep=timedelta(days=settings.dead_letter_retention_days),
            where=[dl.c.resolved_at.is_not(None)],
            order_by=dl.c.id,
        ),
    ]
    return [job for job in jobs if job is not None]


@dataclass
class Retention:
    db: Database
    interval_seconds: float
    batch_size: int
    jobs: list[RetentionJob] = field(default_factory=list)
    # a pause between two batches of one job, so a long backlog does not take the database's whole attention
    pause_seconds: float = 0.05
    loop: BackgroundLoop = field(init=False)

    def __post_init__(self) -> None:
        # the first round one interval after start: a replica restarting in a loop does no extra work
        self.loop = BackgroundLoop("retention", self._round, interval_seconds=self.interval_seconds, run_at_start=False)

    def add(self, *jobs: RetentionJob | None) -> None:
        """Add jobs; None (a job whose setting is 0) is ignored."""
        self.jobs.extend(job for job in jobs if job is not None)

    @property
    def enabled(self) -> bool:
        return self.interval_seconds > 0 and bool(self.jobs)

    async def run_job(self, job: RetentionJob, now: datetime | None = None) -> int:
        """Run one job in batches until a batch comes back short; the rows touched."""
        total = 0
        while not self.loop.stopping.is_set():
            async with self.db.transaction() as conn:
                done = await job.batch(conn, self.batch_size, now or datetime.now(UTC))
            total += done
            RETAINED.labels(job.name).inc(done)
            if done < self.batch_size:
                break
            await asyncio.sleep(self.pause_seconds)
        return total

    async def run_once(self, now: datetime | None = None) -> dict[str, int]:
        """Every job once; a job that fails is logged and counted, and the others still run."""
        done: dict[str, int] = {}
        for job in self.jobs:
            try:
                done[job.name] = await self.run_job(job, now)
            except Exception as exc:
                RETENTION_FAILURES.labels(job.name).inc()
                log.error("retention job failed", job=job.name, error=describe_error(exc))
        if any(done.values()):
            log.info("retention round", **done)
        return done

    async def _round(self) -> None:
        done = await self.run_once()
        failed = [job.name for job in self.jobs if job.name not in done]
        if failed and not self.loop.stopping.is_set():  # each logged and counted already; the loop shows it
            raise RuntimeError(f"retention jobs failed: {failed}")

    async def run(self) -> None:
        await self.loop.run()

    def stop(self) -> None:
        self.loop.stop()
