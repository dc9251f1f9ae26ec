"""Input that once gave a 500 (found by hand and by fuzzing the OpenAPI): each is now refused with a problem
document before anything is stored, and the limits are exact (the largest allowed value still works)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, text

from handshake_devstack.testing.fixtures import isolated_kafka_settings
from handshake_order.db import coupons, orders
from handshake_order.settings import OrderSettings
from handshake_shared.money import MAX_AMOUNT

PROBLEM = "application/problem+json"
ORDER = {"lines": [{"sku": "MUG", "quantity": 1}], "region": "DE", "shipping_method": "standard"}


@pytest.fixture
def settings(stack, fresh_database) -> OrderSettings:
    # the per-order unit limit raised out of the way: these tests reach the bounds behind it (a line's
    # quantity, the money columns), which hold whatever an operator sets the limit to
    return OrderSettings(
        database_url=fresh_database("handshake_order"),
        max_units_per_order=100_000,
        max_units_held_per_holder=100_000,
        **isolated_kafka_settings(stack),
    )


def assert_problem(r: Any, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["type"] == f"https://handshake.dev/problems/{type_}", body
    return dict(body)


async def scalar(shop: Any, query: Any) -> Any:
    async with shop.runtime.db.engine.connect() as conn:
        return (await conn.execute(query)).scalar()


async def upsert(shop: Any, **sections: Any) -> Any:
    return await shop.client.put(
        "/v1/admin/catalogue", json={"reason": "bad input test", **sections}, headers=shop.token("ops", "admin")
    )


@pytest.mark.parametrize("field", ["sku", "region", "coupon_code"])
async def test_a_nul_character_in_an_anonymous_checkout_is_refused(shop, field) -> None:
    body: dict[str, Any] = {**ORDER, "lines": [{"sku": "MUG", "quantity": 1}], "coupon_code": "TENOFF"}
    if field == "sku":
        body["lines"][0]["sku"] = "MU\x00G"
    else:
        body[field] = body[field][:1] + "\x00" + body[field][1:]

    problem = assert_problem(await shop.checkout(body, key=f"nul-{field}"), 422, "invalid-request")
    assert field in str(problem["errors"])
    assert_problem(await shop.client.post("/v1/quotes", json=body), 422, "invalid-request")
    assert await scalar(shop, select(func.count()).select_from(orders)) == 0


async def test_a_total_past_the_money_limit_is_refused_and_the_limit_itself_is_taken(shop) -> None:
    # 1000 units at the largest unit price, taxed at 100 %: far past what a BIGINT column holds
    r = await upsert(
        shop,
        products=[
            {"sku": "GOLD", "name": "Gold bar", "unit_price": MAX_AMOUNT, "currency": "EUR"},
            {"sku": "EDGE", "name": "Edge", "unit_price": MAX_AMOUNT - 495, "currency": "EUR"},
        ],
        tax_rates=[{"region": "XX", "rate_bp": 10_000}, {"region": "XZ", "rate_bp": 0}],
    )
    assert r.status_code == 200, r.text

    huge = {"lines": [{"sku": "GOLD", "quantity": 1000}], "region": "XX", "shipping_method": "standard"}
    assert_problem(await shop.checkout(huge, key="gold"), 422, "amount-too-large")
    assert_problem(await shop.client.post("/v1/quotes", json=huge), 422, "amount-too-large")
    assert await scalar(shop, select(func.count()).select_from(orders)) == 0

    # goods plus shipping exactly at the limit: accepted, stored and announced as they are
    edge = {"lines": [{"sku": "EDGE", "quantity": 1}], "region": "XZ", "shipping_method": "standard"}
    r = await shop.checkout(edge, key="edge")
    assert r.status_code == 202, r.text
    assert r.json()["total"] == MAX_AMOUNT
    assert await scalar(shop, select(orders.c.total)) == MAX_AMOUNT


async def test_one_sku_on_several_lines_is_held_to_the_limit_of_one_line(shop) -> None:
    split = {**ORDER, "lines": [{"sku": "MUG", "quantity": 600}, {"sku": "MUG", "quantity": 401}]}
    problem = assert_problem(await shop.checkout(split, key="split"), 422, "quantity-too-large")
    assert "MUG" in problem["detail"]
    assert await scalar(shop, select(func.count()).select_from(orders)) == 0

    at_limit = {**ORDER, "lines": [{"sku": "MUG", "quantity": 600}, {"sku": "MUG", "quantity": 400}]}
    r = await shop.checkout(at_limit, key="at-limit")
    assert r.status_code == 202, r.text
    assert r.json()["snapshot"]["lines"] == [
        {"sku": "MUG", "name": "Mug", "unit_price": 1250, "quantity": 1000, "line_total": 1_250_000}
    ]


@pytest.mark.parametrize(
    ("section", "item", "field"),
    [
        ("products", {"sku": "BIG", "name": "Big", "unit_price": 10**19, "currency": "EUR"}, "unit_price"),
        ("products", {"sku": "BIG", "name": "Big", "unit_price": MAX_AMOUNT + 1, "currency": "EUR"}, "unit_price"),
        ("products", {"sku": "XYZ", "name": "Unknown money", "unit_price": 100, "currency": "XYZ"}, "currency"),
        ("products", {"sku": "NUL\x00", "name": "Nul", "unit_price": 100, "currency": "EUR"}, "sku"),
        ("products", {"sku": "BELL", "name": "Bell\x07", "unit_price": 100, "currency": "EUR"}, "name"),
        ("tax_rates", {"region": "R" * 17, "rate_bp": 100}, "region"),
        ("shipping_rates", {"code": "S" * 33, "amount": 100, "currency": "EUR"}, "code"),
        ("shipping_rates", {"code": "express", "amount": 100, "currency": "ABC"}, "currency"),
        ("shipping_rates", {"code": "express", "amount": 10**19, "currency": "EUR"}, "amount"),
        ("coupons", {"code": "C" * 80, "kind": "fixed", "amount_off": 100, "currency": "EUR"}, "code"),
        ("coupons", {"code": "HALF", "kind": "percent"}, "percent_bp"),
        ("coupons", {"code": "HALF", "kind": "percent", "percent_bp": 5000, "amount_off": 100}, "amount_off"),
        ("coupons", {"code": "FIXED", "kind": "fixed", "amount_off": 100}, "currency"),
        ("coupons", {"code": "FIXED", "kind": "fixed", "percent_bp": 1000, "currency": "EUR"}, "amount_off"),
        ("coupons", {"code": "FIXED", "kind": "fixed", "amount_off": 100, "currency": "XYZ"}, "currency"),
        (
            "coupons",
            {"code": "MANY", "kind": "percent", "percent_bp": 100, "max_redemptions": 2**31},
            "max_redemptions",
        ),
        (
            "coupons",
            {"code": "NAIVE", "kind": "percent", "percent_bp": 100, "expires_at": "2030-01-01T00:00:00"},
            "expires_at",
        ),
        ("coupons", {"code": "ODD", "kind": "bogo", "percent_bp": 100}, "coupons"),
    ],
)
async def test_catalogue_input_the_columns_or_the_pricing_cannot_hold_is_refused(shop, section, item, field) -> None:
    before = (await shop.client.get("/v1/products")).json()

    problem = assert_problem(await upsert(shop, **{section: [item]}), 422, "invalid-request")

    assert any(field in map(str, error["loc"]) for error in problem["errors"]), problem["errors"]
    assert (await shop.client.get("/v1/products")).json() == before
    if section == "coupons":
        assert await scalar(shop, select(func.count()).select_from(coupons).where(coupons.c.code == item["code"])) == 0


async def test_currencies_are_read_case_insensitively_and_stored_upper_case(shop) -> None:
    r = await upsert(
        shop,
        products=[{"sku": "CAP", "name": "Cap", "unit_price": 900, "currency": "eur"}],
        coupons=[{"code": "NINE", "kind": "fixed", "amount_off": 100, "currency": "eur"}],
    )
    assert r.status_code == 200, r.text
    r = await shop.client.post(
        "/v1/quotes", json={**ORDER, "lines": [{"sku": "CAP", "quantity": 1}], "coupon_code": "NINE"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["currency"], r.json()["discount"]) == ("EUR", 100)


async def test_a_coupon_stored_without_its_percentage_fails_only_its_own_checkouts(shop) -> None:
    # what the catalogue API let through before it checked a coupon's kind against its fields
    async with shop.runtime.db.transaction() as conn:
        await conn.execute(text("INSERT INTO coupons (code, kind) VALUES ('BROKEN', 'percent')"))

    problem = assert_problem(
        await shop.checkout({**ORDER, "coupon_code": "BROKEN"}, key="broken"), 422, "coupon-misconfigured"
    )
    assert "BROKEN" in problem["detail"]
    assert (await shop.checkout(ORDER, key="no-coupon")).status_code == 202
    assert (await shop.checkout({**ORDER, "coupon_code": "TENOFF"}, key="good-coupon")).status_code == 202


async def test_a_refund_or_transition_reason_with_control_characters_is_refused(shop) -> None:
    order_id = await shop.paid_order()
    staff = shop.token("fin", "finance", "support")
    r = await shop.client.post(
        f"/v1/admin/orders/{order_id}/refunds",
        json={"amount": 100, "reason": "bro\x00ken"},
        headers={**staff, "Idempotency-Key": "r1"},
    )
    assert_problem(r, 422, "invalid-request")
    r = await shop.client.post(
        f"/v1/admin/orders/{order_id}/refunds",
        json={"amount": MAX_AMOUNT + 1, "reason": "too much"},
        headers={**staff, "Idempotency-Key": "r2"},
    )
    assert_problem(r, 422, "invalid-request")
    r = await shop.client.post(
        f"/v1/admin/orders/{order_id}/transitions", json={"to": "fulfilled", "reason": "ship\x00"}, headers=staff
    )
    assert_problem(r, 422, "invalid-request")
    view = await shop.order(order_id)
    assert (view["state"], view["refunds"]) == ("fulfillment_pending", [])


async def test_a_body_over_the_size_limit_gets_413_whether_declared_or_streamed(shop) -> None:
    limit = shop.settings.http_max_body_bytes
    oversize = b" " * (limit + 1)

    async def chunked():  # no Content-Length: counted while it arrives
        for i in range(0, len(oversize), 65_536):
            yield oversize[i : i + 65_536]

    headers = {"Idempotency-Key": "big", "Content-Type": "application/json"}
    declared = await shop.client.post("/v1/checkout", content=oversize, headers=headers)
    streamed = await shop.client.post("/v1/checkout", content=chunked(), headers=headers)
    assert "content-length" not in streamed.request.headers
    for r in (declared, streamed):
        problem = assert_problem(r, 413, "payload-too-large")
        assert problem["max_bytes"] == limit
    # at the limit the body is read and judged as JSON (blank is not), not refused for its size
    assert_problem(
        await shop.client.post("/v1/checkout", content=oversize[:-1], headers=headers), 422, "invalid-request"
    )
    assert await scalar(shop, select(func.count()).select_from(orders)) == 0
