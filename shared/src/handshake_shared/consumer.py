"""Idempotent event consumption: inbox dedup + effects in one transaction, bounded retries, dead letters."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared import metrics
from handshake_shared.db import Database, MessagingTables
from handshake_shared.envelope import CloudEvent, EnvelopeError, parse_event
from handshake_shared.events import dlq_topic, payload_model
from handshake_shared.logging import event_context
from handshake_shared.outbox import Outbox

log = structlog.get_logger("consumer")

# handler(conn, event, payload): runs inside the transaction that also records the inbox row
Handler = Callable[[AsyncConnection, CloudEvent, Any], Awaitable[None]]
# on_dead_letter(conn, event, error): runs inside the dead-letter transaction (e.g. flag the order)
DeadLetterHook = Callable[[AsyncConnection, CloudEvent, str], Awaitable[None]]

# SQLSTATE classes that mean "the database is not reachable right now", not "this message is bad":
# 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown, terminated)
_INFRA_SQLSTATE_CLASSES = ("08", "53", "57")
_INFRA_SQLSTATES = {"55000"}  # object not in prerequisite state: database not accepting connections


def is_infrastructure_error(exc: BaseException) -> bool:
    """True when the failure is about reaching the database or broker, so retrying later will work and
    dead-lettering would be wrong: such a message waits (offset not committed) until things recover."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError, OSError)):
            return True
        if getattr(current, "connection_invalidated", False):
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and (sqlstate[:2] in _INFRA_SQLSTATE_CLASSES or sqlstate in _INFRA_SQLSTATES):
            return True
        name = type(current).__name__
        if name in ("InterfaceError", "ConnectionDoesNotExistError", "CannotConnectNowError", "InternalClientError",
                    "APIConnectionError", "RateLimitError", "TransientError"):  # fmt: skip
            return True
        # a provider answering 429 or 5xx is down or overloaded, not refusing this message
        status = getattr(current, "http_status", None)
        if isinstance(status, int) and (status == 429 or status >= 500):
            return True
        current = current.__cause__ or current.__context__ or getattr(current, "orig", None)
    return False


class InfrastructureUnavailable(Exception):
    """Raised to the broker adapter so the message is redelivered later instead of dead-lettered."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0

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


async def claim(conn: AsyncConnection, tables: MessagingTables, consumer: str, event: CloudEvent) -> bool:
    """Record the event as processed by this consumer; False when it already was."""
    result = await conn.execute(
        pg_insert(tables.inbox)
        .values(consumer=consumer, event_id=event.id, event_type=event.type)
        .on_conflict_do_nothing()
        .returning(tables.inbox.c.event_id)
    )
    return result.first() is not None


class EventConsumer:
    """Applies one topic's events for one consumer group. Offsets are committed by the caller only
    after this returns, i.e. after the database commit; raising makes the broker redeliver."""

    def __init__(
        self,
        *,
        name: str,
        db: Database,
        tables: MessagingTables,
        outbox: Outbox,
        handlers: dict[str, Handler],
        policy: RetryPolicy | None = None,
        on_dead_letter: DeadLetterHook | None = None,
    ) -> None:
        self.name = name
        self.on_dead_letter = on_dead_letter
        self.db = db
        self.t = tables
        self.outbox = outbox
        self.handlers = handlers
        self.policy = policy or RetryPolicy()

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
            handler = self.handlers.get(event.type)
            if handler is None:
                # other producers may add event types; recording them keeps replays cheap
                async with self.db.transaction() as conn:
                    await claim(conn, self.t, self.name, event)
                metrics.EVENTS_CONSUMED.labels(self.name, event.type, "ignored").inc()
                return "ignored"
            try:
                payload = payload_model(event.type).model_validate(event.data)
            except (ValidationError, KeyError) as exc:
                await self.dead_letter(msg, event, f"invalid payload: {exc}", attempts=1)
                return "dead_lettered"
            error: BaseException | None = None
            for attempt in range(1, self.policy.max_attempts + 1):
                try:
                    async with self.db.transaction() as conn:
                        if not await claim(conn, self.t, self.name, event):
                            metrics.EVENTS_CONSUMED.labels(self.name, event.type, "duplicate").inc()
                            log.info("duplicate event ignored")
                            return "duplicate"
                        await handler(conn, event, payload)
                    metrics.EVENTS_CONSUMED.labels(self.name, event.type, "applied").inc()
                    return "applied"
                except PoisonMessage as exc:
                    error = exc
                    break
                except Exception as exc:
                    error = exc
                    metrics.EVENT_HANDLER_RETRIES.labels(self.name).inc()
                    log.warning("event handler failed", attempt=attempt, error=repr(exc))
                    if attempt < self.policy.max_attempts:
                        await asyncio.sleep(self.policy.delay(attempt))
            if error is not None and is_infrastructure_error(error):
                # not the message's fault: leave the offset where it is and let the broker bring it back
                metrics.EVENTS_CONSUMED.labels(self.name, event.type, "deferred").inc()
                await asyncio.sleep(self.policy.max_backoff)
                raise InfrastructureUnavailable(repr(error)) from error
            await self.dead_letter(msg, event, repr(error), attempts=attempt)
            return "dead_lettered"

    async def dead_letter(self, msg: RawMessage, event: CloudEvent | None, error: str, *, attempts: int) -> None:
        """Store the message and queue it for <topic>.dlq in one transaction. If the database itself is
        down this raises, the offset is not committed and the broker redelivers later: never dropped."""
        key = (msg.key or b"").decode(errors="replace") or (event.subject if event else "unknown")
        async with self.db.transaction() as conn:
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
        metrics.DEAD_LETTERS.labels(self.name, msg.topic).inc()
        metrics.EVENTS_CONSUMED.labels(self.name, event.type if event else "unparseable", "dead_lettered").inc()
        log.error("message dead-lettered", topic=msg.topic, error=error[:500], attempts=attempts)
