"""Database plumbing: engine, one-transaction unit of work, and the messaging tables every service has."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import sqlalchemy.exc
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from handshake_shared.locks import SINGLETONS

# Explicit constraint names so Alembic migrations are reproducible across databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


_P = ParamSpec("_P")
_T = TypeVar("_T")


def built_once(builder: Callable[_P, _T]) -> Callable[_P, _T]:
    """A statement builder whose statement is built on the first call and reused (per distinct argument:
    a table, a tuple of column names). SQLAlchemy compiles a statement once and finds the compiled form by a
    cache key it computes from the statement object; a statement built anew on every call pays for building
    itself and for that key each time, which under load was about a tenth of each service's CPU. One built
    once, with bindparam() placeholders for its values, keeps its key (memoized on the object) and costs
    neither. The arguments must be hashable by identity or value: tables, strings, tuples of strings."""
    return functools.cache(builder)  # type: ignore[return-value]


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


@dataclass(frozen=True)
class MessagingTables:
    outbox: Table
    outbox_sequences: Table
    inbox: Table
    dead_letters: Table
    outbox_releases: Table
    dead_letter_redrives: Table


def add_messaging_tables(metadata: MetaData) -> MessagingTables:
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("topic", Text, nullable=False),
        Column("message_key", Text, nullable=False),
        # key-hash bucket: one relay replica owns a bucket at a time, so one key is never reordered
        Column("bucket", SmallInteger, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("sequence", Integer, nullable=True),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        # sends the broker refused because of the row itself (too large, unknown topic, not authorised);
        # an outage counts for nothing here
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text, nullable=True),
        # after a refused send the row, and with it every later row of its key, waits until then
        Column("next_attempt_at", DateTime(timezone=True), nullable=True),
        # refused too often: the key waits for a person (GET /v1/admin/outbox/parked, then release)
        Column("parked_at", DateTime(timezone=True), nullable=True),
        comment="Events committed with the state change that caused them, waiting for the relay to publish.",
    )
    Index(
        "ix_outbox_unpublished",
        outbox.c.bucket,
        outbox.c.id,
        postgresql_where=outbox.c.published_at.is_(None),
    )
    # the few keys held back by a refused or parked row, read every relay round
    Index(
        "ix_outbox_held",
        outbox.c.message_key,
        postgresql_where=text("published_at IS NULL AND (next_attempt_at IS NOT NULL OR parked_at IS NOT NULL)"),
    )
    outbox_sequences = Table(
        "outbox_sequences",
        metadata,
        Column("aggregate_id", Text, primary_key=True),
        Column("last_sequence", Integer, nullable=False),
        comment="Per-order event sequence of this service; the row lock also orders concurrent writers.",
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", Text, primary_key=True),
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("event_type", Text, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        comment="Every consumed event id, written in the same transaction as its effects: a redelivery finds it and does nothing.",
    )
    # retention deletes the oldest rows in batches; without it each batch would scan the whole inbox
    Index("ix_inbox_processed_at", inbox.c.processed_at)
    dead_letters = Table(
        "dead_letters",
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("consumer", Text, nullable=False),
        Column("topic", Text, nullable=False),
        Column("partition", Integer, nullable=True),
        Column("kafka_offset", BigInteger, nullable=True),
        Column("message_key", Text, nullable=True),
        Column("event_id", Text, nullable=True),
        Column("event_type", Text, nullable=True),
        Column("payload", LargeBinary, nullable=False),
        Column("error", Text, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        # set when an admin redrove or discarded it (dead_letter_redrives says who, why and what it did); only
        # then may retention delete it
        Column("resolved_at", DateTime(timezone=True), nullable=True),
        comment="Messages a consumer gave up on after bounded retries; also published to <topic>.dlq.",
    )
    outbox_releases = Table(
        "outbox_releases",
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("outbox_id", BigInteger, nullable=False),
        Column("event_id", UUID(as_uuid=True), nullable=False),
        Column("actor", Text, nullable=False),
        Column("reason", Text, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("last_error", Text, nullable=True),
        Column("parked_at", DateTime(timezone=True), nullable=True),
        Column("released_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        comment="Audit trail of parked outbox rows an admin released for another publish attempt.",
    )
    dead_letter_redrives = Table(
        "dead_letter_redrives",
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        # no foreign key: the audit row outlives the dead letter, which retention deletes
        Column("dead_letter_id", BigInteger, nullable=False, unique=True),
        Column("consumer", Text, nullable=False),
        Column("event_id", Text, nullable=True),
        Column("event_type", Text, nullable=True),
        Column("actor", Text, nullable=False),
        Column("reason", Text, nullable=False),
        # applied: the handler ran; already_applied: the inbox showed the event applied before, nothing ran;
        # discarded: resolved without running anything. Plain text, no CHECK: a new outcome needs no migration
        Column("outcome", Text, nullable=False),
        Column("redriven_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        comment="Audit trail of dead letters an admin redrove through their consumer's handler, at most once each.",
    )
    return MessagingTables(outbox, outbox_sequences, inbox, dead_letters, outbox_releases, dead_letter_redrives)


def error_chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, as Python shows them (an explicitly suppressed context left out)."""
    seen: set[int] = set()
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out.append(current)
        context = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or context or getattr(current, "orig", None)
    return out


def sqlstate_of(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else None


def describe_error(exc: BaseException) -> str:
    """The error as logs and dead letters show it, never with a value that was bound to a SQL statement.

    `hide_parameters` keeps SQLAlchemy from printing the parameters, but the driver's own message may still
    quote one (asyncpg: "invalid input for query argument $1: 'value'"; PostgreSQL's data exceptions:
    'invalid input syntax for type uuid: "value"'), and DETAIL lines quote whole rows. So a database error
    is described by its class, SQLSTATE, constraint and primary message, and the message is left out for
    data exceptions (class 22)."""
    if isinstance(exc, sqlalchemy.exc.StatementError):
        driver = next(
            (e for e in error_chain(exc)[1:] if sqlstate_of(e) and type(e).__module__.startswith("asyncpg")), None
        )
        described = _describe_database_error(driver) if driver is not None else _describe_database_error(exc.orig)
        statement = " ".join((exc.statement or "").split())[:200]
        return f"{type(exc).__name__}: {described}" + (f" [SQL: {statement}]" if statement else "")
    if sqlstate_of(exc) and type(exc).__module__.startswith("asyncpg"):
        return _describe_database_error(exc)
    return repr(exc)


def _describe_database_error(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown database error"
    state = sqlstate_of(exc)
    name = type(exc).__name__
    if state is None:
        return f"{name}: {exc}" if not isinstance(exc, sqlalchemy.exc.StatementError) else name
    if state.startswith("22"):
        return f"{name} (SQLSTATE {state}): value not shown"
    message = getattr(exc, "message", None) or (str(exc.args[0]) if exc.args else "")
    constraint = getattr(exc, "constraint_name", None)
    return f"{name} (SQLSTATE {state}): {message}" + (f" [constraint {constraint}]" if constraint else "")


def async_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("database URL must be a postgresql:// URL")


# Server-side limits on every connection (0 turns one off). A statement or lock wait that runs away would
# otherwise hold a pool connection, and with it a consumer's partition, for as long as it likes; a transaction
# left idle holds its locks and blocks vacuum. The idle limit must stay above the relay's longest round,
# which holds its transaction open while the broker acknowledges.
DEFAULT_STATEMENT_TIMEOUT_MS = 15_000
DEFAULT_LOCK_TIMEOUT_MS = 5_000
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000


def server_settings(
    *, statement_timeout_ms: int, lock_timeout_ms: int, idle_in_transaction_timeout_ms: int
) -> dict[str, str]:
    return {
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": str(lock_timeout_ms),
        "idle_in_transaction_session_timeout": str(idle_in_transaction_timeout_ms),
    }


# a pooled connection unused for longer than this is checked with a ping before it is handed out; one in
# steady use is not (under load that ping was one extra round trip per transaction)
IDLE_PING_SECONDS = 10.0


def ping_connections_idle_for(engine: AsyncEngine, seconds: float) -> None:
    """Pessimistic disconnect handling for idle connections only. A database restart or a failover closes
    every pooled connection; the first checkout of each after an idle spell finds out here and gets a fresh
    one, instead of failing the request. A connection that broke while in steady use fails its statement,
    and SQLAlchemy then invalidates the whole pool (it treats that as a disconnect), so the next ones are new."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("checked_in_at")
        if idle_since is None or time.monotonic() - idle_since < seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # the pool discards this connection and checks out another (a new one if need be)
            raise sqlalchemy.exc.DisconnectionError() from exc


_TRY_LOCK = text("SELECT pg_try_advisory_lock(:k)")
_UNLOCK = text("SELECT pg_advisory_unlock(:k)")


class Database:
    """An engine plus the unit of work: state, audit, outbox and inbox rows commit together."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 20,
        echo: bool = False,
        statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
        lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
        idle_in_transaction_timeout_ms: int = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
        idle_ping_seconds: float = IDLE_PING_SECONDS,
    ) -> None:
        self.engine: AsyncEngine = create_async_engine(
            async_url(url),
            # A fixed pool: overflow connections are closed on return, so a burst above the pool size opened
            # and closed a PostgreSQL backend (a fork) per transaction. Connections are opened lazily and kept.
            pool_size=pool_size,
            max_overflow=0,
            echo=echo,
            # bound values (amounts, emails, tokens) never reach a log line, an error text or a dead letter
            hide_parameters=True,
            connect_args={
                "server_settings": server_settings(
                    statement_timeout_ms=statement_timeout_ms,
                    lock_timeout_ms=lock_timeout_ms,
                    idle_in_transaction_timeout_ms=idle_in_transaction_timeout_ms,
                )
            },
        )
        ping_connections_idle_for(self.engine, idle_ping_seconds)
        # set after a commit that wrote outbox rows, so the relay publishes at once instead of at its next poll
        self.outbox_written = asyncio.Event()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn
            wrote_outbox = conn.info.pop("outbox_dirty", False)
        if wrote_outbox:
            self.outbox_written.set()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: each statement runs on its own (autocommit), so a read costs its
        statements and not a BEGIN and a ROLLBACK besides. Under READ COMMITTED each statement sees the data
        committed when it starts either way; several reads that must agree on one snapshot, and anything
        that writes, use transaction()."""
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @asynccontextmanager
    async def held_by_one_replica(self, key: int) -> AsyncIterator[bool]:
        """A session advisory lock taken without waiting: yields True while this process holds it, False when
        another process (another replica) does. For background work that one replica at a time should do,
        where the tables already make a second one safe and this keeps it from being done twice. `key` is one
        of the registry's singletons (handshake_shared.locks); any other number is refused."""
        if key not in SINGLETONS:
            raise ValueError(f"advisory lock {key:#x} is not a singleton of handshake_shared.locks")
        async with self.engine.connect() as conn:
            locked = bool((await conn.execute(_TRY_LOCK, {"k": int(key)})).scalar())
            await conn.commit()
            try:
                yield locked
            finally:
                if locked:
                    await conn.execute(_UNLOCK, {"k": int(key)})
                    await conn.commit()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
