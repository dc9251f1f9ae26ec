"""The admin API refuses what it cannot store (a reconciliation note PostgreSQL cannot hold, a note that is not
text) with a 422 problem before a run starts, and a body over the size limit with a 413."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from handshake_devstack.tokens import issue_token

PROBLEM = "application/problem+json"


async def runs(service: Any) -> int:
    async with service.db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM reconciliation_runs"))).scalar_one())


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "webhook\x00outage"},
        {"reason": {"nested": "object"}},
        {"reason": "x" * 501},
        {"reason": "ok", "force": True},
    ],
)
async def test_a_reconciliation_note_that_cannot_be_kept_is_refused(service, http, body) -> None:
    finance = {"Authorization": f"Bearer {issue_token(service.settings, 'agent-1', ['finance'])}"}
    r = await http.post("/v1/admin/reconciliation-runs", headers=finance, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "https://handshake.dev/problems/invalid-request"
    assert await runs(service) == 0


async def test_a_body_over_the_limit_gets_413_before_a_run_starts(service, http) -> None:
    finance = {"Authorization": f"Bearer {issue_token(service.settings, 'agent-1', ['finance'])}"}
    oversize = b" " * (service.settings.http_max_body_bytes + 1)
    r = await http.post(
        "/v1/admin/reconciliation-runs", headers={**finance, "Content-Type": "application/json"}, content=oversize
    )
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == PROBLEM
    assert await runs(service) == 0
