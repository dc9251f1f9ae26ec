"""Transactional outbox: enqueue inside the business transaction, publish from a relay after commit."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared import metrics
from handshake_shared.db import Database, MessagingTables
from handshake_shared.envelope import CloudEvent, build_event

log = structlog.get_logger("outbox")

BUCKETS = 16
# advisory-lock namespace for relay buckets ("OUTB" as an int), distinct from any other lock we take
_LOCK_NAMESPACE = 0x4F555442

# send(topic, key, value, headers) -> a future that resolves when the broker acknowledged (acks=all)
SendFn = Callable[[str, bytes, bytes, dict[str, str]], Awaitable["asyncio.Future[Any]"]]


def bucket_of(key: str) -> int:
    return zlib.crc32(key.encode()) % BUCKETS


class Outbox:
    def __init__(self, tables: MessagingTables, service: str) -> None:
        self.t = tables
        self.service = service

    async def next_sequence(self, conn: AsyncConnection, order_id: str) -> int:
        # The upsert takes the aggregate's row lock, so a second writer for the same order waits
        # here and therefore also gets a larger outbox id: id order == sequence order per order.
        result = await conn.execute(
            text(
                "INSERT INTO outbox_sequences (aggregate_id, last_sequence) VALUES (:a, 1) "
                "ON CONFLICT (aggregate_id) DO UPDATE SET last_sequence = outbox_sequences.last_sequence + 1 "
                "RETURNING last_sequence"
            ),
            {"a": order_id},
        )
        return int(result.scalar_one())

    async def emit(
        self,
        conn: AsyncConnection,
        *,
        topic: str,
        type: str,
        order_id: str,
        data: BaseModel | dict[str, Any],
        cause: CloudEvent | None = None,
        traceparent: str | None = None,
    ) -> CloudEvent:
        sequence = await self.next_sequence(conn, order_id)
        event = build_event(
            service=self.service,
            type=type,
            order_id=order_id,
            data=data,
            sequence=sequence,
            causation_id=str(cause.id) if cause else None,
            traceparent=traceparent or (cause.traceparent if cause else None),
        )
        await self.put_raw(
            conn,
            topic=topic,
            key=order_id,
            event_id=event.id,
            event_type=type,
            sequence=sequence,
            payload=event.to_bytes(),
            headers=event.kafka_headers(),
        )
        return event

    async def put_raw(
        self,
        conn: AsyncConnection,
        *,
        topic: str,
        key: str,
        event_id: Any,
        event_type: str,
        payload: bytes,
        headers: dict[str, str],
        sequence: int | None = None,
    ) -> None:
        await conn.execute(
            insert(self.t.outbox).values(
                event_id=event_id,
                topic=topic,
                message_key=key,
                bucket=bucket_of(key),
                event_type=event_type,
                sequence=sequence,
                payload=payload,
                headers=headers,
            )
        )
        conn.info["outbox_dirty"] = True


class OutboxRelay:
    """Publishes committed outbox rows in id order per key-hash bucket; marks them after the broker acks.

    Several replicas may run: each batch runs in one transaction holding transaction-level advisory
    locks on the buckets it serves, so one bucket (and so one order) is published by one replica at a time.
    """

    def __init__(
        self,
        db: Database,
        tables: MessagingTables,
        send: SendFn,
        *,
        service: str,
        batch_size: int = 200,
        idle_poll_seconds: float = 0.5,
        max_backoff_seconds: float = 5.0,
        publish_timeout_seconds: float = 15.0,
    ) -> None:
        self.db = db
        self.t = tables
        self.send = send
        self.service = service
        self.batch_size = batch_size
        self.idle_poll = idle_poll_seconds
        self.max_backoff = max_backoff_seconds
        self.publish_timeout = publish_timeout_seconds
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.db.outbox_written.set()

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            # everything that touches the database or the broker is inside the try: an outage at any
            # point (also while idle, reading the lag) backs off instead of ending the relay for good
            try:
                published = await self.publish_once()
                if failures:
                    log.info("outbox relay recovered", failed_rounds=failures)
                failures = 0
                if published == 0:
                    await self._refresh_lag()
            except Exception as exc:  # broker or database down: back off and try again
                failures += 1
                delay = min(self.max_backoff, 0.1 * 2**failures)
                metrics.OUTBOX_PUBLISH_ERRORS.labels(self.service).inc()
                log.warning("outbox relay failed", error=repr(exc), retry_in=delay)
                await self._sleep(delay)
                continue
            if published == 0:
                self.db.outbox_written.clear()
                await self._wait_for_work()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _wait_for_work(self) -> None:
        try:
            await asyncio.wait_for(self.db.outbox_written.wait(), timeout=self.idle_poll)
        except TimeoutError:
            pass

    async def _refresh_lag(self) -> None:
        async with self.db.engine.connect() as conn:
            count, age = (
                await conn.execute(
                    text(
                        "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
                        "FROM outbox WHERE published_at IS NULL"
                    )
                )
            ).one()
        metrics.OUTBOX_PENDING.labels(self.service).set(count)
        metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(float(age))

    async def publish_once(self) -> int:
        # a batch that the producer can neither deliver nor fail (broker gone mid-flight) must not hold
        # the bucket locks forever: give up on the round; unmarked rows go again (consumers dedupe)
        return await asyncio.wait_for(self._publish_batch(), timeout=self.publish_timeout)

    async def _publish_batch(self) -> int:
        ob = self.t.outbox
        async with self.db.engine.begin() as conn:
            pending_buckets = (
                (await conn.execute(select(ob.c.bucket).where(ob.c.published_at.is_(None)).distinct())).scalars().all()
            )
            if not pending_buckets:
                return 0
            locked = (
                (
                    await conn.execute(
                        text("SELECT b FROM unnest(CAST(:buckets AS int[])) AS b WHERE pg_try_advisory_xact_lock(:ns, b)"),
                        {"buckets": list(pending_buckets), "ns": _LOCK_NAMESPACE},
                    )
                )
                .scalars()
                .all()
            )
            if not locked:
                return 0  # another replica holds them; it will publish
            rows = (
                await conn.execute(
                    select(ob.c.id, ob.c.topic, ob.c.message_key, ob.c.payload, ob.c.headers)
                    .where(ob.c.published_at.is_(None), ob.c.bucket.in_(locked))
                    .order_by(ob.c.id)
                    .limit(self.batch_size)
                )
            ).all()
            if not rows:
                return 0
            # one order's events in commit order: a key's next row is sent only once the broker has
            # acknowledged the previous one, and nothing more of that key goes after a failure (else a later
            # event could reach the topic first and the earlier one follow on the next round). Keys run
            # concurrently, so a batch still costs about one round trip per event of its busiest key.
            by_key: dict[str, list[Any]] = {}
            for row in rows:
                by_key.setdefault(row.message_key, []).append(row)
            outcomes = await asyncio.gather(*(self._send_in_order(key_rows) for key_rows in by_key.values()))
            published: list[int] = [row_id for sent, _ in outcomes for row_id in sent]
            errors = [error for _, error in outcomes if error is not None]
            first_error: BaseException | None = errors[0] if errors else None
            failed_keys = {key for key, (_, error) in zip(by_key, outcomes, strict=True) if error is not None}
            if published:
                await conn.execute(update(ob).where(ob.c.id.in_(published)).values(published_at=func.now()))
            if failed_keys:
                done = set(published)
                failed_ids = [r.id for r in rows if r.id not in done]
                await conn.execute(
                    update(ob)
                    .where(ob.c.id.in_(failed_ids))
                    .values(attempts=ob.c.attempts + 1, last_error=repr(first_error)[:500])
                )
        metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(published))
        if failed_keys:
            raise RuntimeError(f"{len(rows) - len(published)} outbox rows not acknowledged: {first_error!r}")
        return len(published)

    async def _send_in_order(self, key_rows: list[Any]) -> tuple[list[int], BaseException | None]:
        """The rows of one key, each after the previous was acknowledged; stops at the first failure."""
        sent: list[int] = []
        for row in key_rows:
            try:
                delivery = await self.send(row.topic, row.message_key.encode(), row.payload, row.headers)
                await delivery
            except Exception as exc:  # noqa: BLE001 - reported by the caller; the rest of the key waits
                return sent, exc
            sent.append(row.id)
        return sent, None
