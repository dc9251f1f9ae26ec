"""Admin HTTP API against real PostgreSQL (ASGI, no lifespan: these routes need only the database)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from handshake_devstack.tokens import issue_token
from handshake_inventory.app import create_app

PROBLEM = "application/problem+json"


@pytest.fixture
async def admin_api(settings) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    app = create_app(settings)
    token = issue_token(settings, "ops-alice", ["admin"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://service", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client, app
    await app.state.runtime.db.dispose()


async def test_stock_is_admin_only(admin_api, settings) -> None:
    client, _ = admin_api
    anonymous = await client.get("/v1/admin/stock", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == PROBLEM
    support = issue_token(settings, "sam", ["support"])
    r = await client.put(
        "/v1/admin/stock/MUG", json={"available": 5, "reason": "count"}, headers={"Authorization": f"Bearer {support}"}
    )
    assert r.status_code == 403 and r.json()["type"].endswith("/forbidden")
    assert (await client.get("/v1/admin/stock")).json()["items"] == []  # the refused write changed nothing


async def test_setting_stock_creates_the_sku_and_audits_who_why_and_the_delta(admin_api) -> None:
    client, _ = admin_api
    missing = await client.get("/v1/admin/stock/MUG")
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert missing.json()["type"].endswith("/sku-not-found")

    r = await client.put("/v1/admin/stock/MUG", json={"available": 7, "reason": "goods received"})
    assert r.status_code == 200, r.text
    assert (r.json()["available"], r.json()["delta_available"]) == (7, 7)
    r = await client.put("/v1/admin/stock/MUG", json={"available": 4, "reason": "3 broken in the warehouse"})
    assert r.json()["delta_available"] == -3

    view = (await client.get("/v1/admin/stock/MUG")).json()
    assert (view["available"], view["reserved"], view["sold"]) == (4, 0, 0)
    assert [(m["kind"], m["delta_available"], m["reason"], m["actor"]) for m in view["recent_movements"]] == [
        ("adjust", -3, "3 broken in the warehouse", "ops-alice"),
        ("adjust", 7, "goods received", "ops-alice"),
    ]
    listing = (await client.get("/v1/admin/stock")).json()["items"]
    assert [(s["sku"], s["available"]) for s in listing] == [("MUG", 4)]


async def test_a_stock_count_needs_a_reason_a_sane_number_and_a_current_view(admin_api) -> None:
    client, _ = admin_api
    await client.put("/v1/admin/stock/MUG", json={"available": 5, "reason": "initial count"})
    for body in (
        {"available": 9},
        {"available": 9, "reason": "  "},
        {"available": -1, "reason": "typo"},
        {"available": 9, "reason": "count", "reserved": 0},
    ):
        r = await client.put("/v1/admin/stock/MUG", json=body)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, body
    # the operator counted against 4 but the shelf says 5 now: refused instead of silently overwriting
    stale = await client.put("/v1/admin/stock/MUG", json={"available": 9, "reason": "recount", "expected_available": 4})
    assert stale.status_code == 409 and stale.json()["available"] == 5
    fresh = await client.put("/v1/admin/stock/MUG", json={"available": 9, "reason": "recount", "expected_available": 5})
    assert fresh.json()["delta_available"] == 4
    view = (await client.get("/v1/admin/stock/MUG")).json()
    assert view["available"] == 9 and len(view["recent_movements"]) == 2


async def test_a_reservation_is_shown_with_its_lines(admin_api) -> None:
    client, app = admin_api
    order_id = str(uuid.uuid4())
    assert (await client.get(f"/v1/admin/reservations/{order_id}")).status_code == 404
    await client.put("/v1/admin/stock/TEE", json={"available": 3, "reason": "initial count"})
    await client.put("/v1/admin/stock/MUG", json={"available": 3, "reason": "initial count"})
    async with app.state.runtime.db.transaction() as conn:
        outcome = await app.state.handlers.reserve(conn, order_id, [("TEE", 1), ("MUG", 2), ("TEE", 1)], cause=None)
    assert outcome == "reserved"

    r = await client.get(f"/v1/admin/reservations/{order_id}")
    assert r.status_code == 200
    body = r.json()
    assert body["state"] == "held" and body["order_id"] == order_id
    assert body["lines"] == [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 2}]
    mug = (await client.get("/v1/admin/stock/MUG")).json()
    assert (mug["available"], mug["reserved"]) == (1, 2)
    assert mug["recent_movements"][0]["order_id"] == order_id


async def test_support_sees_a_reservations_state_history_and_the_units_behind_each_step(admin_api, settings) -> None:
    client, app = admin_api
    handlers, sweeper, db = app.state.handlers, app.state.sweeper, app.state.runtime.db
    order_id = str(uuid.uuid4())
    await client.put("/v1/admin/stock/MUG", json={"available": 3, "reason": "initial count"})
    async with db.transaction() as conn:
        await handlers.reserve(conn, order_id, [("MUG", 2)], cause=None)
    async with db.transaction() as conn:
        await conn.execute(text("UPDATE reservations SET expires_at = now() - interval '1 second'"))
    assert await sweeper.sweep_once() == 1
    async with db.transaction() as conn:
        assert await handlers.commit(conn, order_id, cause=None, trigger="order paid") == "rereserved"
    async with db.transaction() as conn:
        assert await handlers.cancel(conn, order_id, "capture failed", cause=None) == "restocked"

    support = {"Authorization": f"Bearer {issue_token(settings, 'sam', ['support'])}"}
    r = await client.get(f"/v1/admin/reservations/{order_id}", headers=support)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "restocked"
    assert [(h["from_state"], h["to_state"], h["reason"], h["actor"]) for h in body["history"]] == [
        (None, "held", "order placed", "inventory-service"),
        ("held", "expired", "reservation expired", "inventory-expiry-sweeper"),
        ("expired", "committed", "order paid: re-reserved, the reservation was expired", "inventory-service"),
        ("committed", "restocked", "capture failed", "inventory-service"),
    ]
    columns = ("kind", "sku", "delta_available", "delta_reserved", "delta_sold")
    assert [tuple(m[c] for c in columns) for m in body["movements"]] == [
        ("reserve", "MUG", -2, 2, 0),
        ("expire", "MUG", 2, -2, 0),
        ("reserve", "MUG", -2, 2, 0),
        ("commit", "MUG", 0, -2, 2),
        ("restock", "MUG", 2, 0, -2),
    ]
    mug = (await client.get("/v1/admin/stock/MUG")).json()
    assert (mug["available"], mug["reserved"], mug["sold"]) == (3, 0, 0)

    # finance, checking a refund with restock, reads the same answer
    finance = {"Authorization": f"Bearer {issue_token(settings, 'fin', ['finance'])}"}
    seen_by_finance = await client.get(f"/v1/admin/reservations/{order_id}", headers=finance)
    assert seen_by_finance.status_code == 200 and seen_by_finance.json() == body
    assert body["expires_at"] and body["lines"] == [{"sku": "MUG", "quantity": 2}]

    customer = {"Authorization": f"Bearer {issue_token(settings, 'carol', [])}"}
    assert (await client.get(f"/v1/admin/reservations/{order_id}", headers=customer)).status_code == 403
    assert (await client.get("/v1/admin/stock/MUG", headers=support)).status_code == 403  # stock stays admin-only
