"""A database error in a request becomes a problem document, never a 500 and never SQL: 503 while the database
is away, 409 when the request collides with stored data, 422 when it carries a value the database refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, text

from handshake_devstack.processes import free_port
from handshake_order.app import create_app
from handshake_order.db import products
from handshake_order.settings import OrderSettings
from handshake_shared.db import Database
from handshake_shared.http import install_problem_handlers

PROBLEM = "application/problem+json"


def assert_problem_without_sql(r: httpx.Response, status: int, type_: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == f"https://handshake.dev/problems/{type_}"
    told = " ".join(str(v) for k, v in r.json().items() if k != "instance").lower()  # instance: the request's path
    for leak in ("SELECT", "INSERT", "SELEC ", "products", "asyncpg", "sqlalchemy", "postgres", "sku"):
        assert leak.lower() not in told, r.text


async def test_requests_while_the_database_is_unreachable_get_503(stack) -> None:
    settings = OrderSettings(
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/handshake_order",
        kafka_bootstrap_servers=stack.broker.bootstrap_servers,
    )
    app = create_app(settings)  # no lifespan: the routes themselves meet the missing database
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            listed = await client.get("/v1/products")
            placed = await client.post(
                "/v1/checkout",
                headers={"Idempotency-Key": "k", "Guest-Session": "s" * 43},
                json={"lines": [{"sku": "MUG", "quantity": 1}], "region": "DE", "shipping_method": "standard"},
            )
        for r in (listed, placed):
            assert_problem_without_sql(r, 503, "database-unavailable")
            assert r.headers["retry-after"] == "1"
    finally:
        await app.state.runtime.db.dispose()


@pytest.fixture
def database_url(fresh_database) -> str:
    # created at setup: the migration helper runs an event loop of its own, so not inside the test's loop
    return str(fresh_database("handshake_order"))


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Routes that write what the order schema refuses, behind the problem handlers every service installs."""
    db = Database(database_url)
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/products")
    async def add(body: dict[str, Any]) -> dict[str, str]:
        async with db.transaction() as conn:
            await conn.execute(insert(products).values(currency="EUR", **body))
        return {"sku": body["sku"]}

    @app.get("/broken")
    async def broken() -> None:
        async with db.engine.connect() as conn:
            await conn.execute(text("SELEC 1 FROM products"))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as c:
        yield c
    await db.dispose()


async def test_a_duplicate_key_is_a_conflict(client) -> None:
    assert (await client.post("/products", json={"sku": "MUG", "name": "Mug", "unit_price": 1})).status_code == 200
    assert_problem_without_sql(
        await client.post("/products", json={"sku": "MUG", "name": "Mug", "unit_price": 2}), 409, "conflict"
    )


@pytest.mark.parametrize(
    "values",
    [
        {"sku": "NEG", "name": "Negative", "unit_price": -1},  # CHECK unit_price_non_negative
        {"sku": "NUL", "name": "N\x00ul", "unit_price": 1},  # PostgreSQL text holds no NUL
        {"sku": "S" * 65, "name": "Long", "unit_price": 1},  # varchar(64)
        {"sku": "BIG", "name": "Big", "unit_price": 2**63},  # beyond BIGINT: refused by the driver
    ],
)
async def test_a_value_the_database_refuses_is_invalid_input(client, values) -> None:
    assert_problem_without_sql(await client.post("/products", json=values), 422, "invalid-request")


async def test_any_other_database_error_is_503_without_detail(client) -> None:
    r = await client.get("/broken")
    assert_problem_without_sql(r, 503, "database-error")
    assert "detail" in r.json() and "SELEC" not in r.json()["detail"]
