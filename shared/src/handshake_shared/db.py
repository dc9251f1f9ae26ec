"""Database plumbing: engine, one-transaction unit of work, and the messaging tables every service has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

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
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

# Explicit constraint names so Alembic migrations are reproducible across databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


@dataclass(frozen=True)
class MessagingTables:
    outbox: Table
    outbox_sequences: Table
    inbox: Table
    dead_letters: Table


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
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text, nullable=True),
        comment="Events committed with the state change that caused them, waiting for the relay to publish.",
    )
    Index(
        "ix_outbox_unpublished",
        outbox.c.bucket,
        outbox.c.id,
        postgresql_where=outbox.c.published_at.is_(None),
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
        Column("resolved_at", DateTime(timezone=True), nullable=True),
        comment="Messages a consumer gave up on after bounded retries; also published to <topic>.dlq.",
    )
    return MessagingTables(outbox, outbox_sequences, inbox, dead_letters)


def async_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("database URL must be a postgresql:// URL")


class Database:
    """An engine plus the unit of work: state, audit, outbox and inbox rows commit together."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.engine: AsyncEngine = create_async_engine(
            async_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, echo=echo
        )
        # set after a commit that wrote outbox rows, so the relay publishes at once instead of at its next poll
        self.outbox_written = asyncio.Event()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn
            wrote_outbox = conn.info.pop("outbox_dirty", False)
        if wrote_outbox:
            self.outbox_written.set()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
