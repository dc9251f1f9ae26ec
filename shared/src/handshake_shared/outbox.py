"""Transactional outbox: enqueue inside the business transaction, publish from a relay after commit."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import structlog
from aiokafka.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError
from prometheus_client import Counter, Gauge
from sqlalchemy import BigInteger, Table, bindparam, func, insert, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared import metrics
from handshake_shared.db import Database, MessagingTables, built_once, describe_error
from handshake_shared.envelope import CloudEvent, build_event
from handshake_shared.events.base import Payload
from handshake_shared.locks import AdvisoryLock
from handshake_shared.loops import BackgroundLoop

log = structlog.get_logger("outbox")

# the relay's refusal and parking metrics (the shared lag and throughput ones are in metrics.py)
OUTBOX_PARKED = Gauge(
    "handshake_outbox_parked", "Outbox rows parked after repeated refusals, each holding back its key", ["service"]
)
OUTBOX_ROWS_PARKED = Counter(
    "handshake_outbox_rows_parked_total", "Outbox rows parked after repeated refusals", ["service", "topic"]
)
OUTBOX_REFUSED = Counter(
    "handshake_outbox_refused_total",
    "Sends the broker refused for the row itself (too large, unknown topic, not authorised)",
    ["service", "topic"],
)

BUCKETS = 16
_BUCKET_LOCK = int(AdvisoryLock.OUTBOX_BUCKET)

# send(topic, key, value, headers) -> a future that resolves when the broker acknowledged (acks=all)
SendFn = Callable[[str, bytes, bytes, dict[str, str]], Awaitable["asyncio.Future[Any]"]]
# sets some gauge from the database, on the relay's connection
GaugeReader = Callable[[AsyncConnection], Awaitable[None]]


# The relay's and the writers' statements, built once (handshake_shared.db.built_once says why).
_NEXT_SEQUENCE = text(
    "INSERT INTO outbox_sequences (aggregate_id, last_sequence) VALUES (:a, 1) "
    "ON CONFLICT (aggregate_id) DO UPDATE SET last_sequence = outbox_sequences.last_sequence + 1 "
    "RETURNING last_sequence"
)
# The buckets with pending rows that this replica can lock (another replica holds the rest and publishes them).
# Their rows are read by the next statement, never by this one: under READ COMMITTED a statement reads the
# snapshot taken when it started, and a lock granted later in the same statement may be one another replica
# released in between, at the commit that marked its rows published. Such a statement would see those rows
# still pending and publish them a second time. A replica's commit is visible before its locks are released,
# so a statement that starts once the locks are held sees every mark made under them.
_LOCK_PENDING_BUCKETS = text(
    "SELECT b.bucket FROM (SELECT DISTINCT bucket FROM outbox WHERE published_at IS NULL) AS b "
    "WHERE pg_try_advisory_xact_lock(:ns, b.bucket)"
)
# The oldest pending rows of the locked buckets, leaving out every key that waits (parked, backing off after a
# refusal, or still in flight from an earlier round): a held key is skipped whole, so nothing of it overtakes
# the row it waits for.
_PENDING_ROWS = text(
    "WITH held AS MATERIALIZED ("
    "  SELECT DISTINCT message_key FROM outbox WHERE published_at IS NULL"
    "  AND (parked_at IS NOT NULL OR next_attempt_at > now())) "
    "SELECT id, topic, message_key, payload, headers, attempts FROM outbox "
    "WHERE published_at IS NULL AND bucket = ANY(CAST(:buckets AS smallint[])) "
    "AND message_key NOT IN (SELECT message_key FROM held) "
    "AND NOT (message_key = ANY(CAST(:inflight AS text[]))) "
    "ORDER BY id LIMIT :limit"
)
# A key still in flight when its round ends loses the round's bucket lock with the commit, yet its rows are
# unmarked: another replica could lock the bucket and send them again, its later rows then racing the late
# answer. So its rows wait like a refused row's (next_attempt_at, which every replica's selection honours) until
# this replica collects the answer, renewed every round meanwhile. If this replica dies, the wait runs out and
# another one takes the key over: the rows go again (at least once; consumers dedupe by event id).
_LEASE_INFLIGHT = text(
    "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => :seconds) "
    "WHERE id = ANY(CAST(:ids AS bigint[])) AND published_at IS NULL AND parked_at IS NULL"
)
_END_LEASE = text(
    "UPDATE outbox SET next_attempt_at = NULL "
    "WHERE id = ANY(CAST(:ids AS bigint[])) AND published_at IS NULL AND parked_at IS NULL"
)
_LAG = text(
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0), "
    "count(*) FILTER (WHERE parked_at IS NOT NULL) FROM outbox WHERE published_at IS NULL"
)


@built_once
def _insert_statement(outbox: Table) -> Any:
    return insert(outbox)


@built_once
def _mark_published_statement(outbox: Table) -> Any:
    # = ANY(array): one statement whatever the number of ids (IN would be one per count)
    return (
        update(outbox)
        .where(outbox.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))))
        .values(published_at=func.now())
    )


def bucket_of(key: str) -> int:
    return zlib.crc32(key.encode()) % BUCKETS


class Outbox:
    def __init__(self, tables: MessagingTables, service: str) -> None:
        self.t = tables
        self.service = service

    async def next_sequence(self, conn: AsyncConnection, order_id: str) -> int:
        # The upsert takes the aggregate's row lock, so a second writer for the same order waits
        # here and therefore also gets a larger outbox id: id order == sequence order per order.
        result = await conn.execute(_NEXT_SEQUENCE, {"a": order_id})
        return int(result.scalar_one())

    async def emit(
        self,
        conn: AsyncConnection,
        payload: Payload,
        /,
        *,
        order_id: str | UUID,
        cause: CloudEvent | None = None,
        traceparent: str | None = None,
    ) -> CloudEvent:
        """Enqueue `payload` as one event of its class's type on its class's topic, keyed by `order_id`: the
        class decides both, so an event's type, topic and data cannot disagree."""
        if not payload.event_type or not payload.event_topic:
            raise TypeError(f"{payload.__class__.__name__} is no event type's payload class")
        topic, type = payload.event_topic, payload.event_type
        key = str(order_id)
        sequence = await self.next_sequence(conn, key)
        event = build_event(
            service=self.service,
            type=type,
            order_id=key,
            data=payload,
            sequence=sequence,
            causation_id=str(cause.id) if cause else None,
            traceparent=traceparent or (cause.traceparent if cause else None),
        )
        await self.put_raw(
            conn,
            topic=topic,
            key=key,
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
            _insert_statement(self.t.outbox),
            {
                "event_id": event_id,
                "topic": topic,
                "message_key": key,
                "bucket": bucket_of(key),
                "event_type": event_type,
                "sequence": sequence,
                "payload": payload,
                "headers": headers,
            },
        )
        conn.info["outbox_dirty"] = True


def broker_unavailable(exc: BaseException) -> bool:
    """True when a send failed because the broker, or the way to it, is unavailable: every row would fail
    alike, and none of them is to blame. False when the broker refused this row for what it is (too large,
    a topic that does not exist or that this service may not write, anything unexpected): the row is charged
    with an attempt and eventually parked."""
    if isinstance(exc, UnknownTopicOrPartitionError):
        return False  # retriable to Kafka (the topic may be on its way), but only a person can create it
    if isinstance(exc, KafkaTimeoutError):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


@dataclass(frozen=True)
class _KeyOutcome:
    sent: list[int]
    failed: Any = None  # the row the broker did not acknowledge; nothing after it was sent
    error: BaseException | None = None


class OutboxRelay:
    """Publishes committed outbox rows in id order per key-hash bucket; marks them after the broker acks.

    Several replicas may run: each batch runs in one transaction holding transaction-level advisory
    locks on the buckets it serves, so one bucket (and so one order) is published by one replica at a time.

    A row the broker refuses holds back only its own key: it and every later row of that key wait out a
    backoff (`next_attempt_at`) while other keys go on, and after `max_attempts` refusals the row is parked
    until an admin releases it. A broker outage charges no row: the round fails and the relay backs off.
    A key whose send is still unanswered after `slow_send_seconds` (a topic the client is still looking for)
    no longer holds up the round: its answer is collected in a later round, and nothing more of that key is
    sent meanwhile, by this replica or another.
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
        max_attempts: int = 10,
        retry_max_backoff_seconds: float = 60.0,
        slow_send_seconds: float = 2.0,
        broker_reachable: Callable[[], Awaitable[bool]] | None = None,
        gauges: Sequence[GaugeReader] = (),
        gauge_interval_seconds: float = 15.0,
    ) -> None:
        self.db = db
        self.t = tables
        self.send = send
        self.service = service
        self.batch_size = batch_size
        self.idle_poll = idle_poll_seconds
        self.max_backoff = max_backoff_seconds
        self.publish_timeout = publish_timeout_seconds
        self.max_attempts = max_attempts
        self.retry_max_backoff = retry_max_backoff_seconds
        self.slow_send = slow_send_seconds
        self.broker_reachable = broker_reachable
        # key -> (its send task from an earlier round, the signal to send nothing after the current row)
        self._inflight: dict[str, tuple[asyncio.Task[_KeyOutcome], asyncio.Event]] = {}
        # key -> its rows held from other replicas while its send is in flight (_LEASE_INFLIGHT says why), for
        # longer than a round and the longest pause between two rounds, so that renewing every round keeps them
        self._leased: dict[str, list[int]] = {}
        self.lease_seconds = publish_timeout_seconds + max(max_backoff_seconds, idle_poll_seconds)
        self._took_full_batch = False
        self._lag_read_at = float("-inf")
        # other gauges read with the lag, less often: their tables have no index that keeps the count cheap,
        # and a scrape every 15 s or more would not see the difference
        self.gauges = tuple(gauges)
        self.gauge_interval = gauge_interval_seconds
        self._gauges_read_at = float("-inf")
        # a broker or database outage backs off (0.2 s doubling up to max_backoff) instead of ending the relay;
        # a commit in this process wakes it before its idle poll; a stop lets the round in flight finish
        self.loop = BackgroundLoop(
            "outbox_relay",
            self._round,
            interval_seconds=idle_poll_seconds,
            initial_backoff_seconds=0.2,
            max_backoff_seconds=max_backoff_seconds,
            wake=db.outbox_written,
            stop_grace_seconds=publish_timeout_seconds,
            on_exit=self._forget_inflight,
        )

    def stop(self) -> None:
        self.loop.stop()

    async def run(self) -> None:
        await self.loop.run()

    async def _round(self) -> bool:
        """One round; True when it took a full batch (more is waiting). Otherwise the next round comes when
        the wake event is set again, by a commit or a late send's answer since this round began, or at the
        idle poll: a round that published is not followed by one that looks again and finds nothing."""
        # cleared before looking, never after: a commit landing while this round runs sets it again
        self.db.outbox_written.clear()
        try:
            await self.publish_once()
        except Exception:
            metrics.OUTBOX_PUBLISH_ERRORS.labels(self.service).inc()
            await self._refresh_lag()
            raise
        # after every round, whatever it did: a lag that only moved when the outbox was empty would read 0 for
        # as long as one row keeps failing
        await self._refresh_lag()
        return self._took_full_batch

    def _forget_inflight(self) -> None:
        for task, _ in self._inflight.values():
            task.cancel()  # unmarked rows go again after a restart (consumers dedupe)
        self._inflight.clear()
        self._leased.clear()

    async def _refresh_lag(self) -> None:
        """At most once per idle poll interval, the other gauges at most once per gauge interval."""
        now = asyncio.get_running_loop().time()
        if now - self._lag_read_at < self.idle_poll:
            return
        self._lag_read_at = now
        others = now - self._gauges_read_at >= self.gauge_interval
        if others:
            self._gauges_read_at = now
        await self.read_gauges(others=others)

    async def read_gauges(self, *, others: bool = True) -> None:
        """Read the outbox lag, and with `others` the relay's other gauges, from the database now. A database
        that cannot be read leaves the last values (the round's own failure is what gets reported)."""
        try:
            async with self.db.read() as conn:
                count, age, parked = (await conn.execute(_LAG)).one()
                metrics.OUTBOX_PENDING.labels(self.service).set(count)
                metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(float(age))
                OUTBOX_PARKED.labels(self.service).set(parked)
                for read in self.gauges if others else ():
                    await read(conn)
        except Exception as exc:
            log.debug("gauges not read", error=describe_error(exc))

    async def publish_once(self) -> int:
        # a round the database does not answer must not hold the bucket locks forever: give up on it;
        # unmarked rows go again (consumers dedupe)
        return await asyncio.wait_for(self._publish_batch(), timeout=self.publish_timeout)

    async def _publish_batch(self) -> int:
        async with self.db.engine.begin() as conn:
            # answers that came after their round first, so their keys' state is current before selecting
            published, outage = await self._record(conn, self._harvest())
            # the locks first, then the rows, in a statement of its own (_LOCK_PENDING_BUCKETS says why)
            buckets = (await conn.execute(_LOCK_PENDING_BUCKETS, {"ns": _BUCKET_LOCK})).scalars().all()
            rows: Sequence[Any] = []
            if buckets:
                rows = (
                    await conn.execute(
                        _PENDING_ROWS,
                        {
                            "buckets": list(buckets),
                            "inflight": list(self._inflight),
                            "limit": self.batch_size,
                        },
                    )
                ).all()
            self._took_full_batch = len(rows) >= self.batch_size
            # one order's events in commit order: a key's next row is sent only once the broker has
            # acknowledged the previous one, and nothing more of that key goes after a failure (else a later
            # event could reach the topic first and the earlier one follow on the next round). Keys run
            # concurrently, so a batch still costs about one round trip per event of its busiest key.
            by_key: dict[str, list[Any]] = {}
            for row in rows:
                by_key.setdefault(row.message_key, []).append(row)
            for key, key_rows in by_key.items():
                abandon = asyncio.Event()
                self._inflight[key] = (asyncio.create_task(self._send_in_order(key_rows, abandon)), abandon)
            if by_key:
                await asyncio.wait([self._inflight[key][0] for key in by_key], timeout=self.slow_send)
            for key in by_key:
                task = self._inflight[key][0]
                if not task.done():  # its answer, when it comes, wakes the relay to collect it
                    task.add_done_callback(lambda _: self.db.outbox_written.set())
            for _, abandon in self._inflight.values():
                abandon.set()  # this round's locks end with it: a late key finishes its current row, no more
            more, late_outage = await self._record(conn, self._harvest())
            published += more
            outage = outage or late_outage
            for key in self._inflight.keys() & by_key.keys():
                self._leased[key] = [row.id for row in by_key[key]]
            if self._leased:
                leased = [row_id for ids in self._leased.values() for row_id in ids]
                await conn.execute(_LEASE_INFLIGHT, {"ids": leased, "seconds": self.lease_seconds})
        if outage is not None:
            raise RuntimeError(f"outbox rows not acknowledged: {outage!r}")
        return published

    def _harvest(self) -> tuple[list[_KeyOutcome], list[int]]:
        """The answers of the keys whose sends have ended, and the rows leased for them."""
        outcomes: list[_KeyOutcome] = []
        leased: list[int] = []
        for key in [k for k, (task, _) in self._inflight.items() if task.done()]:
            task, _ = self._inflight.pop(key)
            leased += self._leased.pop(key, [])
            if not task.cancelled():
                outcomes.append(task.result())
        return outcomes, leased

    async def _record(
        self, conn: AsyncConnection, harvested: tuple[list[_KeyOutcome], list[int]]
    ) -> tuple[int, BaseException | None]:
        """Ends the leases of the harvested keys, marks what the broker acknowledged and charges each refusal
        to its row. Returns how many rows were published and the first failure that was the broker's, not a
        row's."""
        ob = self.t.outbox
        outcomes, leased = harvested
        if leased:
            await conn.execute(_END_LEASE, {"ids": leased})
        published = [row_id for outcome in outcomes for row_id in outcome.sent]
        if published:
            await conn.execute(_mark_published_statement(ob), {"ids": published})
            metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(published))
        failed = [o for o in outcomes if o.error is not None]
        outage = [o for o in failed if broker_unavailable(o.error)]  # type: ignore[arg-type]
        refused = [o for o in failed if o not in outage]
        # "refused" is believed only from a broker that works: nothing acknowledged and no answer to a ping
        # means it is the broker (a client that cannot fetch metadata reports every topic as unknown)
        if refused and not published and not await self._broker_answers():
            outage, refused = outage + refused, []
        for o in outage:
            await conn.execute(
                update(ob).where(ob.c.id == o.failed.id).values(last_error=describe_error(o.error)[:500])  # type: ignore[arg-type]
            )
        for o in refused:
            await self._charge(conn, o)
        return len(published), outage[0].error if outage else None

    async def _broker_answers(self) -> bool:
        if self.broker_reachable is None:
            return True
        try:
            return await self.broker_reachable()
        except Exception:
            return False

    async def _charge(self, conn: AsyncConnection, outcome: _KeyOutcome) -> None:
        ob = self.t.outbox
        row, error = outcome.failed, describe_error(outcome.error)  # type: ignore[arg-type]
        # the count as stored: an admin may have released the row (a fresh budget) since it was selected
        attempts = (
            await conn.execute(
                update(ob)
                .where(ob.c.id == row.id, ob.c.published_at.is_(None))
                .values(attempts=ob.c.attempts + 1, last_error=error[:500])
                .returning(ob.c.attempts)
            )
        ).scalar()
        if attempts is None:
            return  # published meanwhile (another replica)
        parked = attempts >= self.max_attempts
        delay = min(self.retry_max_backoff, 2.0 ** (attempts - 1))
        await conn.execute(
            update(ob)
            .where(ob.c.id == row.id)
            .values(
                next_attempt_at=None if parked else func.now() + timedelta(seconds=delay),
                parked_at=func.now() if parked else None,
            )
        )
        OUTBOX_REFUSED.labels(self.service, row.topic).inc()
        if parked:
            OUTBOX_ROWS_PARKED.labels(self.service, row.topic).inc()
            log.error(
                "outbox row parked: its key waits for an admin",
                outbox_id=row.id,
                topic=row.topic,
                key=row.message_key,
                attempts=attempts,
                error=error[:500],
            )
        else:
            log.warning(
                "outbox row refused by the broker; its key waits",
                outbox_id=row.id,
                topic=row.topic,
                key=row.message_key,
                attempts=attempts,
                retry_in=delay,
                error=error[:500],
            )

    async def _send_in_order(self, key_rows: list[Any], abandon: asyncio.Event) -> _KeyOutcome:
        """The rows of one key, each after the previous was acknowledged; stops at the first failure, and
        after the current row once its round has ended."""
        sent: list[int] = []
        for row in key_rows:
            if abandon.is_set():
                break
            try:
                delivery = await self.send(row.topic, row.message_key.encode(), row.payload, row.headers)
                await delivery
            except Exception as exc:
                return _KeyOutcome(sent, row, exc)
            sent.append(row.id)
        return _KeyOutcome(sent)
