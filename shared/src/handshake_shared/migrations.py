"""Alembic, run async, for every service: env.py calls run_env(); services call upgrade() at start."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from handshake_shared.db import async_url


def run_env(target_metadata: MetaData) -> None:
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url") or os.environ["HANDSHAKE_DATABASE_URL"]

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
        async with engine.connect() as conn:
            await conn.run_sync(do_run)
        await engine.dispose()

    connection = context.config.attributes.get("connection")
    if connection is not None:
        do_run(connection)
    else:
        asyncio.run(run_async())


def alembic_config(service_dir: Path, url: str) -> Config:
    config = Config(str(service_dir / "alembic.ini"))
    config.set_main_option("script_location", str(service_dir / "alembic"))
    config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade(service_dir: Path, url: str) -> None:
    command.upgrade(alembic_config(service_dir, url), "head")
