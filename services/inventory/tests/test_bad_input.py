"""Admin input that once gave a 500 (control characters PostgreSQL cannot store) is refused with a 422 problem,
and a body over the size limit with a 413, before the stock or its ledger is touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from handshake_devstack.tokens import issue_token
from handshake_inventory.app import create_app

PROBLEM = "application/problem+json"


@pytest.fixture
async def api(settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = settings.model_copy(update={"http_max_body_bytes": 4096})
    app = create_app(settings)
    token = issue_token(settings, "ops-alice", ["admin"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://service", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client, app
    await app.state.runtime.db.dispose()


async def ledger_rows(app: Any) -> int:
    async with app.state.runtime.db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM stock_movements"))).scalar_one())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/admin/stock/MU%00G", {"available": 5, "reason": "count"}),
        ("PUT", "/v1/admin/stock/MUG", {"available": 5, "reason": "co\x00unt"}),
        ("PUT", "/v1/admin/stock/MUG", {"available": 5, "reason": "count", "expected_available": 2**40}),
        ("GET", "/v1/admin/stock/MU%00G", None),
        ("GET", "/v1/admin/stock?after=M%00", None),
        ("GET", "/v1/admin/reservations/order%00", None),
    ],
)
async def test_input_postgresql_cannot_hold_is_refused(api, method, path, body) -> None:
    client, app = api
    r = await client.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "https://handshake.dev/problems/invalid-request"
    assert await ledger_rows(app) == 0


async def test_a_body_over_the_limit_gets_413_and_changes_nothing(api) -> None:
    client, app = api
    reason = "r" * 5000

    async def chunked():  # no Content-Length
        body = ('{"available": 5, "reason": "' + reason + '"}').encode()
        for i in range(0, len(body), 1024):
            yield body[i : i + 1024]

    declared = await client.put("/v1/admin/stock/MUG", json={"available": 5, "reason": reason})
    streamed = await client.put("/v1/admin/stock/MUG", content=chunked(), headers={"Content-Type": "application/json"})
    for r in (declared, streamed):
        assert r.status_code == 413, r.text
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"] == "https://handshake.dev/problems/payload-too-large"
    assert await ledger_rows(app) == 0
    assert (await client.put("/v1/admin/stock/MUG", json={"available": 5, "reason": "count"})).status_code == 200
