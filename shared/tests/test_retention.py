"""The retention loop every service runs: published outbox rows, old inbox rows and redriven dead letters go,
in bounded batches; unpublished and parked rows and open dead letters stay whatever their age. On the
inventory service's tables in real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from handshake_devstack.testing.fixtures import eventually, isolated_kafka_settings, serve_in_process
from handshake_inventory.app import create_app
from handshake_inventory.db import messaging
from handshake_inventory.settings import InventorySettings
from handshake_shared.retention import messaging_jobs

ob, inbox, dl = messaging.outbox, messaging.inbox, messaging.dead_letters
NOW = datetime.now(UTC)


@pytest.fixture
def make_settings(stack, fresh_database):
    url = fresh_database("handshake_inventory")

    def make(**overrides: Any) -> InventorySettings:
        return InventorySettings(database_url=url, **isolated_kafka_settings(stack), **overrides)

    return make


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


async def seed(db: Any) -> None:
    """Labelled rows: the label says whether retention (72 h outbox, 14 d inbox, 30 d dead letters) keeps it."""
    async with db.transaction() as conn:
        for label, created, published, parked in (
            ("delete-published-4d", ago(days=4), ago(days=4), None),
            ("delete-published-73h", ago(days=4), ago(hours=73), None),
            ("keep-published-1h", ago(hours=1), ago(hours=1), None),
            ("keep-unpublished-30d", ago(days=30), None, None),
            ("keep-parked-30d", ago(days=30), None, ago(days=29)),
        ):
            await conn.execute(
                insert(ob).values(
                    event_id=uuid.uuid4(),
                    topic="t",
                    message_key=label,
                    bucket=0,
                    event_type="x",
                    payload=b"{}",
                    headers={},
                    created_at=created,
                    published_at=published,
                    parked_at=parked,
                )
            )
        for label, processed in (("delete-15d", ago(days=15)), ("keep-13d", ago(days=13)), ("keep-now", NOW)):
            await conn.execute(
                insert(inbox).values(consumer="c", event_id=uuid.uuid4(), event_type=label, processed_at=processed)
            )
        for label, created, resolved in (
            ("delete-resolved-31d", ago(days=60), ago(days=31)),
            ("keep-resolved-29d", ago(days=60), ago(days=29)),
            ("keep-open-60d", ago(days=60), None),
        ):
            await conn.execute(
                insert(dl).values(
                    consumer="c",
                    topic="t",
                    payload=b"{}",
                    error=label,
                    attempts=1,
                    created_at=created,
                    resolved_at=resolved,
                )
            )


async def labels(db: Any) -> set[str]:
    async with db.engine.connect() as conn:
        return (
            set((await conn.execute(select(ob.c.message_key))).scalars())
            | set((await conn.execute(select(inbox.c.event_type))).scalars())
            | set((await conn.execute(select(dl.c.error))).scalars())
        )


async def test_each_job_deletes_only_what_is_past_its_window_and_never_unsent_parked_or_open_rows(
    make_settings,
) -> None:
    settings = make_settings()
    assert (settings.outbox_retention_hours, settings.inbox_retention_days, settings.dead_letter_retention_days) == (
        72,
        14,
        30,
    )
    runtime = create_app(settings).state.runtime
    await seed(runtime.db)
    done = await runtime.retention.run_once(NOW)
    assert done == {"outbox": 2, "inbox": 1, "dead_letters": 1}
    assert await labels(runtime.db) == {
        "keep-published-1h",
        "keep-unpublished-30d",
        "keep-parked-30d",
        "keep-13d",
        "keep-now",
        "keep-resolved-29d",
        "keep-open-60d",
    }
    await runtime.db.dispose()


async def test_a_backlog_goes_in_batches_of_the_configured_size_each_in_its_own_transaction(make_settings) -> None:
    settings = make_settings(retention_batch_size=2)
    runtime = create_app(settings).state.runtime
    async with runtime.db.transaction() as conn:
        for _ in range(5):
            await conn.execute(
                insert(inbox).values(consumer="c", event_id=uuid.uuid4(), event_type="old", processed_at=ago(days=20))
            )
    [job] = [j for j in runtime.retention.jobs if j.name == "inbox"]
    batches: list[tuple[int, int]] = []
    real = job.batch

    async def counted(conn, limit, now):
        done = await real(conn, limit, now)
        # each batch's transaction is its own: the rows of earlier batches are already gone for everyone
        async with runtime.db.engine.connect() as other:
            left = (await other.execute(select(func.count()).select_from(inbox))).scalar_one()
        batches.append((done, left))
        return done

    object.__setattr__(job, "batch", counted)
    assert await runtime.retention.run_job(job) == 5
    assert batches == [(2, 5), (2, 3), (1, 1)]
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(inbox))).scalar_one() == 0
    await runtime.db.dispose()


async def test_zero_turns_a_job_off(make_settings) -> None:
    settings = make_settings(outbox_retention_hours=0, inbox_retention_days=0)
    assert [j.name for j in messaging_jobs(messaging, settings)] == ["dead_letters"]
    runtime = create_app(settings).state.runtime
    await seed(runtime.db)
    assert await runtime.retention.run_once(NOW) == {"dead_letters": 1}
    assert "delete-published-4d" in await labels(runtime.db) and "delete-15d" in await labels(runtime.db)
    await runtime.db.dispose()


async def test_a_running_service_runs_the_loop_by_itself(make_settings) -> None:
    app = create_app(make_settings(retention_interval_seconds=0.2))
    runtime = app.state.runtime
    await seed(runtime.db)
    async with serve_in_process(app):

        async def swept() -> bool:
            return not any(label.startswith("delete") for label in await labels(runtime.db))

        await eventually(swept)
        assert {"keep-unpublished-30d", "keep-parked-30d", "keep-open-60d"} <= await labels(runtime.db)
