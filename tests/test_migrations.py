"""Each service's committed Alembic history builds exactly the tables its code declares, and unwinds."""

from __future__ import annotations

import asyncio
import importlib
import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from handshake_shared.db import async_url
from handshake_shared.migrations import alembic_config, upgrade

SERVICES = ("handshake_order", "handshake_payment", "handshake_inventory", "handshake_webhook_ingest")


async def schema_state(url: str, metadata: MetaData) -> tuple[list, set[str]]:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
            )
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    return diff, tables


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_match_the_declared_tables_and_downgrade_cleanly(stack, service: str) -> None:
    metadata = importlib.import_module(f"{service}.db").metadata
    url = stack.postgres.create_database(f"t_mig_{uuid.uuid4().hex[:10]}")

    upgrade(f"{service}.migrations", url)
    diff, tables = asyncio.run(schema_state(url, metadata))
    assert diff == []
    assert {"outbox", "outbox_sequences", "inbox", "dead_letters"} <= tables

    command.downgrade(alembic_config(f"{service}.migrations", url), "base")
    _, tables = asyncio.run(schema_state(url, metadata))
    assert tables <= {"alembic_version"}
