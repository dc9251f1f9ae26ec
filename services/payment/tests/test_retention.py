"""Old finished reconciliation runs are deleted by the service's retention loop; a run still going is kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from handshake_payment.app import create_app
from handshake_payment.db import reconciliation_runs as runs


async def test_finished_reconciliation_runs_past_the_retention_are_deleted_by_the_loop(settings) -> None:
    assert settings.reconciliation_retention_days == 90
    runtime = create_app(settings).state.runtime
    [job] = [j for j in runtime.retention.jobs if j.name == "reconciliation_runs"]
    now = datetime.now(UTC)
    async with runtime.db.transaction() as conn:
        for kind, started, finished in (("old", 91, 91), ("old-unfinished", 91, None), ("recent", 89, 89)):
            await conn.execute(
                insert(runs).values(
                    id=uuid.uuid4(),
                    kind=kind,
                    trigger="scheduled",
                    started_at=now - timedelta(days=started),
                    finished_at=None if finished is None else now - timedelta(days=finished),
                )
            )
    assert await runtime.retention.run_job(job) == 1
    async with runtime.db.engine.connect() as conn:
        assert set((await conn.execute(select(runs.c.kind))).scalars()) == {"old-unfinished", "recent"}
    await runtime.db.dispose()


def test_zero_keeps_reconciliation_runs_for_ever(settings) -> None:
    runtime = create_app(settings.model_copy(update={"reconciliation_retention_days": 0})).state.runtime
    assert "reconciliation_runs" not in [j.name for j in runtime.retention.jobs]
