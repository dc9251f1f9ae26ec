"""Alembic, run async, for every service. Each service's history is a package inside its wheel
(`handshake_<service>.migrations`), so an installed service migrates without a source checkout:
env.py calls run_env(); `python -m handshake_<service> migrate` and the start-up path call upgrade()."""

from __future__ import annotations

import asyncio
import os
import time
from importlib.resources import files

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from handshake_shared.db import async_url

# the file names the committed histories already use: date, revision, slug
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"


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


def alembic_config(migrations_package: str, url: str) -> Config:
    """migrations_package: e.g. "handshake_order.migrations" (a directory inside the installed package)."""
    config = Config()
    config.set_main_option("script_location", str(files(migrations_package)))
    config.set_main_option("file_template", FILE_TEMPLATE)
    # '%' would be read as interpolation by the config parser (a password may contain it)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(migrations_package: str, url: str) -> None:
    command.upgrade(alembic_config(migrations_package, url), "head")


def pending_revisions(migrations_package: str, url: str) -> set[str]:
    """The heads of the code's history that the database has not reached (empty: the schema is current)."""
    heads = set(ScriptDirectory.from_config(alembic_config(migrations_package, url)).get_heads())

    async def current() -> set[str]:
        engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads()))
        finally:
            await engine.dispose()

    return heads - asyncio.run(current())


def wait_for_schema(migrations_package: str, url: str, *, poll_seconds: float = 2.0) -> None:
    """A serving process that does not migrate waits for the release's migration job: consumers that met
    a table or column they expect but the database lacks would dead-letter good messages."""
    log = structlog.get_logger("migrations")
    waiting = False
    while True:
        try:
            missing = pending_revisions(migrations_package, url)
        except (OSError, SQLAlchemyError) as exc:  # database not reachable yet: the same wait
            missing = {f"unknown ({type(exc).__name__})"}
        if not missing:
            if waiting:
                log.info("schema is current; starting")
            return
        if not waiting:
            log.warning("waiting for the migration job: the database lacks revisions", missing=sorted(missing))
            waiting = True
        time.sleep(poll_seconds)
