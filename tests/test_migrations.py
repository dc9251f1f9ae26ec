"""Each service's committed Alembic history builds exactly the tables its code declares, and unwinds."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import uuid

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from handshake_devstack.processes import free_port, port_open, wait_until
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


def test_a_serving_process_that_does_not_migrate_waits_for_the_migration_job(stack, tmp_path) -> None:
    """Consumers started on a database behind the code would dead-letter good messages; the process waits,
    not serving, until the release's migration job has run, then starts by itself."""
    url = stack.postgres.create_database(f"t_wait_{uuid.uuid4().hex[:10]}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env.update(
        {
            "HANDSHAKE_ENVIRONMENT": "test",
            "HANDSHAKE_DATABASE_URL": url,
            "HANDSHAKE_MIGRATE_ON_START": "false",
            "HANDSHAKE_HTTP_PORT": str(port),
            "HANDSHAKE_KAFKA_BOOTSTRAP_SERVERS": stack.broker.bootstrap_servers,
            "HANDSHAKE_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "HANDSHAKE_KAFKA_GROUP_PREFIX": f"w{uuid.uuid4().hex[:6]}.",
        }
    )
    log_path = tmp_path / "inventory.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "handshake_inventory"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: "waiting for the migration job" in log_path.read_text(), 30, "the wait", proc)
        assert not port_open(port)
        assert asyncio.run(schema_state(url, MetaData()))[1] == set()  # it created nothing itself

        upgrade("handshake_inventory.migrations", url)
        wait_until(lambda: _ready(port), 30, "inventory after the migration", proc)
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
