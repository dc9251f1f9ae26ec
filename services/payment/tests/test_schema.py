"""The committed Alembic history builds exactly the tables the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from handshake_payment.db import metadata
from handshake_shared.db import async_url


async def test_migrations_match_the_declared_tables(settings) -> None:
    engine = create_async_engine(async_url(settings.database_url.get_secret_value()))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []
