"""Idempotent event consumption: inbox dedup + effects in one transaction, bounded retries, dead letters."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc
import structlog
from pydantic import ValidationError
from sqlalchemy import Table, bindparam, insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared import metrics
from handshake_shared.db import Database, MessagingTables, built_once, describe_error, error_chain, sqlstate_of
from handshake_shared.envelope import CloudEvent, EnvelopeError, parse_event
from handshake_shared.events import EVENT_MODELS, dlq_topic
from handshake_shared.events.base import Payload
from handshake_shared.logging import event_context
from handshake_shared.outbox import Outbox

log = structlog.get_logger("consumer")

# handler(conn, event, payload): runs inside the transaction that also records the inbox row
Handler = Callable[[AsyncConnection, CloudEvent, Any], Awaitable[None]]
# which handler applies which event: keyed by payload class, so a handler is tied to the one type it reads.
Handlers = Mapping[type[Payload], Handler]
# on_dead_letter(conn, event, error): runs inside the dead-letter transaction (e.g. flag the order)
DeadLetterHook = Callable[[AsyncConnection, CloudEvent, str], Awaitable[None]]

# Which failures are not the message's fault. Only these leave the message on the broker (offset not
# committed) instead of dead-lettering it; everything else is retried a bounded number of times and then
# dead-lettered, because retrying a message for ever stalls its whole partition.
#
# Outage (the database cannot be reached or cannot take work; a retry later will do it):
#   08xxx connection exception; 53xxx insufficient resources (53300 too many connections, disk full, out of
#   memory); 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now (starting, recovering),
#   57P05 idle session timeout (the server dropped a pooled connection); 55000, how PostgreSQL refuses
#   connections to a database that takes none (ALLOW_CONNECTIONS false, maintenance).
# Not an outage, although it can pass: 57014 statement timeout / query cancelled and 55P03 lock timeout (the
#   database answered: this message's work ran past its limit, and will most likely do so again), 40001
#   serialization failure and 40P01 deadlock (contention: the retries within one delivery resolve it, and a
#   message that loses every time is better dead-lettered than repeated for ever), 25P03 idle in transaction
#   (the handler held its transaction open too long). These are retried within the delivery's attempts and
#   then dead-lettered like any other failure.
_OUTAGE_SQLSTATE_CLASSES = ("08", "53")
_OUTAGE_SQLSTATES = {"57P01", "57P02", "57P03", "57P05", "55000"}
_NOT_OUTAGE_SQLSTATES = {"57014", "55P03", "40001", "40P01", "25P03"}
# the network failing under us; other OSErrors (a missing file, a permission) are bugs or bad data
_OUTAGE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EHOSTDOWN,
}
# provider SDK (stripe) names for "could not reach it" and "slow down"
_OUTAGE_ERROR_NAMES = {"ConnectionDoesNotExistError", "APIConnectionError", "RateLimitError"}


def _is_network_oserror(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True  # refused, reset, aborted, broken pipe; a connect that timed out; a name not resolving
    if isinstance(exc, OSError):
        if exc.errno in _OUTAGE_ERRNOS:
            return True
        # asyncio's create_connection folds the failures of several addresses into one errno-less OSError
        return exc.errno is None and "Connect call failed" in str(exc)
    return False


def is_infrastructure_error(exc: BaseException) -> bool:
    """True when the failure is about reaching the database or provider, so retrying later will work and
    dead-lettering would be wrong: such a message waits (offset not committed) until things recover, up to
    the consumer's deferral cap."""
    chain = error_chain(exc)
    states = [s for s in map(sqlstate_of, chain) if s]
    if any(s in _NOT_OUTAGE_SQLSTATES for s in states):
        return False
    if any(s[:2] in _OUTAGE_SQLSTATE_CLASSES or s in _OUTAGE_SQLSTATES for s in states):
        return True
    for current in chain:
        if _is_network_oserror(current):
            return True
        if getattr(current, "connection_invalidated", False):  # SQLAlchemy saw the connection drop
            return True
        if isinstance(current, sqlalchemy.exc.TimeoutError):  # no pool connection came free in time
            return True
        if type(current).__name__ in _OUTAGE_ERROR_NAMES:
            return True
        # a provider answering 429 or 5xx is down or overloaded, not refusing this message
        status = getattr(current, "http_status", None)
        if isinstance(status, int) and (status == 429 or status >= 500):
            return True
    return False


class InfrastructureUnavailable(Exception):
    """Raised to the broker adapter so the message is redelivered later instead of dead-lettered."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    # deliveries that failed only for infrastructure before the message is dead-lettered anyway
    max_deferrals: int = 400

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes


class PoisonMessage(Exception):
    """The message can never be applied (not a CloudEvent, payload invalid): dead-letter without retrying."""


@built_once
def _claim_statement(inbox: Table) -> Any:
    return (
        pg_insert(inbox)
        # parameters not named like the columns: SQLAlchemy reserves those for the values it binds itself
        .values(consumer=bindparam("by"), event_id=bindparam("id"), event_type=bindparam("type"))
        .on_conflict_do_nothing()
        .returning(inbox.c.event_id)
    )


async def claim(conn: AsyncConnection, tables: MessagingTables, consumer: str, event: CloudEvent) -> bool:
    """Record the event as processed by this consumer; False when it already was."""
    result = await conn.execute(_claim_statement(tables.inbox), {"by": consumer, "id": event.id, "type": event.type})
    return result.first() is not None


def handlers_by_class(handlers: Handlers) -> dict[type[Payload], Handler]:
    """The map keyed by payload class; a class no event type is registered with is refused here, when the
    service starts."""
    by_class: dict[type[Payload], Handler] = {}
    for key, handler in handlers.items():
        if EVENT_MODELS.get(key.event_type) is key:
            by_class[key] = handler
        else:
            raise ValueError(f"{key.__name__} is not the registered payload class of an event type")
    return by_class


class EventConsumer:
    """Applies one topic's events for one consumer group. Offsets are committed by the caller only
    after this returns, i.e. after the database commit; raising makes the broker redeliver.

    The event's `type` names its payload class in the registry; the handler keyed by that class applies
    it. Payloads are validated before any transaction: data that does not fit the class (a field missing,
    an id that is not a UUID) is dead-lettered at once, never handed to a handler."""

    def __init__(
        self,
        *,
        name: str,
        db: Database,
        tables: MessagingTables,
        outbox: Outbox,
        handlers: Handlers,
        policy: RetryPolicy | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        in_flight: asyncio.Semaphore | None = None,
    ) -> None:
        """`in_flight` bounds the messages holding connections at once, shared by a process's consumers: a
        handler holds its transaction's connection and may open short transactions of its own besides (at
        most two more: payment's intent creation applying parked events), so the runtime sizes it to a
        quarter of the pool and such handlers can never all wait on each other for connections. A slot is
        held for one attempt's transaction, not across the backoff between attempts. Without it, one at a
        time."""
        self.name = name
        self.in_flight = in_flight or asyncio.Semaphore(1)
        self.on_dead_letter = on_dead_letter
        self.db = db
        self.t = tables
        self.outbox = outbox
        self.handlers = handlers_by_class(handlers)
        self.policy = policy or RetryPolicy()
        # event id -> deliveries deferred for infrastructure; in memory, since the database may be what is
        # down. A restart or a rebalance starts the count again, so the cap is a lower bound.
        self._deferrals: OrderedDict[str, int] = OrderedDict()

    def handler_for(self, event_type: str) -> tuple[type[Payload], Handler] | None:
        """The payload class of `event_type` and this consumer's handler for it; None when it has none."""
        model = EVENT_MODELS.get(event_type)
        handler = self.handlers.get(model) if model is not None else None
        return None if model is None or handler is None else (model, handler)

    async def handle_batch(self, messages: Sequence[RawMessage]) -> None:
        """One fetched batch: each partition's messages one after another in the order received (a
        partition holds one order's events in the order produced), the partitions side by side. A message
        mostly waits on its database round trips, so one partition's wait no longer holds up the others;
        it is the same concurrency as one replica per partition, which the lock order already allows.

        Raises the first failure once every partition has finished what it could: the caller commits no
        offset, the broker delivers the batch again, and the inbox answers the messages already applied."""
        partitions: dict[tuple[str, int | None], list[RawMessage]] = {}
        for msg in messages:
            partitions.setdefault((msg.topic, msg.partition), []).append(msg)
        outcomes = await asyncio.gather(
            *(self._handle_in_order(run) for run in partitions.values()), return_exceptions=True
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            raise failures[0]

    async def _handle_in_order(self, messages: Sequence[RawMessage]) -> None:
        for msg in messages:
            await self.handle(msg)

    async def handle(self, msg: RawMessage) -> str:
        started = time.perf_counter()
        try:
            outcome = await self._handle(msg)
        finally:
            metrics.EVENT_HANDLING_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.LAST_PROCESSED.labels(self.name).set(time.time())
        return outcome

    async def _handle(self, msg: RawMessage) -> str:
        try:
            event = parse_event(msg.value)
        except EnvelopeError as exc:
            await self.dead_letter(msg, None, f"invalid envelope: {exc}", attempts=1)
            return "dead_lettered"
        with event_context(event):
            found = self.handler_for(event.type)
            if found is None:
                # A type this consumer does not act on (another consumer's, or one a producer added later):
                # skipped without a transaction or an inbox row. Safe because skipping has no effect to
                # repeat: a redelivery is skipped again. Most of a topic's events are of such types.
                metrics.EVENTS_CONSUMED.labels(self.name, event.type, "ignored").inc()
                return "ignored"
            model, handler = found
            try:
                payload = model.model_validate(event.data)
            except ValidationError as exc:
                await self.dead_letter(msg, event, f"invalid payload: {exc}", attempts=1)
                return "dead_lettered"
            error: BaseException | None = None
            for attempt in range(1, self.policy.max_attempts + 1):
                try:
                    # a slot only while it holds connections: never across the sleeps between attempts
                    async with self.in_flight, self.db.transaction() as conn:
                        if not await claim(conn, self.t, self.name, event):
                            metrics.EVENTS_CONSUMED.labels(self.name, event.type, "duplicate").inc()
                            log.info("duplicate event ignored")
                            self._deferrals.pop(str(event.id), None)
                            return "duplicate"
                        await handler(conn, event, payload)
                    metrics.EVENTS_CONSUMED.labels(self.name, event.type, "applied").inc()
                    self._deferrals.pop(str(event.id), None)
                    return "applied"
                except PoisonMessage as exc:
                    error = exc
                    break
                except Exception as exc:
                    error = exc
                    metrics.EVENT_HANDLER_RETRIES.labels(self.name).inc()
                    log.warning("event handler failed", attempt=attempt, error=describe_error(exc))
                    if attempt < self.policy.max_attempts:
                        await asyncio.sleep(self.policy.delay(attempt))
            described = describe_error(error) if error is not None else "unknown error"
            if error is not None and not isinstance(error, PoisonMessage) and is_infrastructure_error(error):
                deferrals = self._deferred(str(event.id))
                if deferrals <= self.policy.max_deferrals:
                    # not the message's fault: leave the offset where it is and let the broker bring it back
                    metrics.EVENTS_CONSUMED.labels(self.name, event.type, "deferred").inc()
                    await asyncio.sleep(self.policy.max_backoff)
                    raise InfrastructureUnavailable(described) from error
                # bounded even so: a dependency that stays away this long needs a person, and the partition
                # behind this message must move. Should the database be what is away, the dead letter cannot
                # be written either, and the message stays on the broker.
                described = f"infrastructure still unavailable after {deferrals - 1} deferred deliveries: {described}"
            await self.dead_letter(msg, event, described, attempts=attempt)
            return "dead_lettered"

    def _deferred(self, event_id: str) -> int:
        count = self._deferrals.pop(event_id, 0) + 1
        self._deferrals[event_id] = count
        while len(self._deferrals) > 10_000:  # messages that went to another consumer after a rebalance
            self._deferrals.popitem(last=False)
        return count

    async def dead_letter(self, msg: RawMessage, event: CloudEvent | None, error: str, *, attempts: int) -> None:
        """Store the message and queue it for <topic>.dlq in one transaction. If the database itself is
        down this raises, the offset is not committed and the broker redelivers later: never dropped."""
        key = (msg.key or b"").decode(errors="replace") or (event.subject if event else "unknown")
        async with self.in_flight, self.db.transaction() as conn:
            await conn.execute(
                insert(self.t.dead_letters).values(
                    consumer=self.name,
                    topic=msg.topic,
                    partition=msg.partition,
                    kafka_offset=msg.offset,
                    message_key=key,
                    event_id=str(event.id) if event else None,
                    event_type=event.type if event else None,
                    payload=msg.value,
                    error=error[:4000],
                    attempts=attempts,
                )
            )
            if event is not None:
                await claim(conn, self.t, self.name, event)
                if self.on_dead_letter is not None:
                    await self.on_dead_letter(conn, event, error)
            await self.outbox.put_raw(
                conn,
                topic=dlq_topic(msg.topic),
                key=key,
                event_id=uuid.uuid4(),
                event_type=event.type if event else "unparseable",
                payload=msg.value,
                headers={"x-dead-letter-consumer": self.name, "x-dead-letter-error": error[:500]},
            )
        if event is not None:
            self._deferrals.pop(str(event.id), None)
        metrics.DEAD_LETTERS.labels(self.name, msg.topic).inc()
        metrics.EVENTS_CONSUMED.labels(self.name, event.type if event else "unparseable", "dead_lettered").inc()
        log.error("message dead-lettered", topic=msg.topic, error=error[:500], attempts=attempts)
