"""Guests are answered only from their own browser's checkouts, lookup tokens travel only in a header and
are never stored, support refunds are limited per order, staff act through admin routes under their own
name, and every catalogue change is recorded with who, why, before and after."""

from __future__ import annotations

import asyncio

from sqlalchemy import Text, cast, func, select

from handshake_order.db import catalogue_changes, idempotency_keys, messaging, orders, products, refunds

MUG_ORDER = {"lines": [{"sku": "MUG", "quantity": 2}], "region": "DE", "shipping_method": "standard"}
MUG_TOTAL = 2500 + 475 + 495
OTHER_BROWSER = "browser-two-cXV4cXV4cXV4cXV4"


async def scalar(shop, stmt):
    async with shop.runtime.db.engine.connect() as conn:
        return (await conn.execute(stmt)).scalar_one()


async def test_another_guest_with_the_same_key_and_body_learns_nothing_of_the_first_order(shop):
    first = await shop.checkout(key="cart-1")
    assert first.status_code == 202
    mine = first.json()

    theirs = await shop.checkout(key="cart-1", **{"Guest-Session": OTHER_BROWSER})
    assert theirs.status_code == 202 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["order_id"] != mine["order_id"]
    assert mine["order_id"] not in theirs.text and mine["lookup_token"] not in theirs.text

    # the first browser's retry after a lost response: the same order, and a token that works
    retry = await shop.checkout(key="cart-1")
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == mine
    read = await shop.client.get(
        f"/v1/orders/{mine['order_id']}", headers={"X-Order-Token": retry.json()["lookup_token"]}
    )
    assert read.status_code == 200
    assert await scalar(shop, select(func.count()).select_from(orders)) == 2


async def test_a_guest_checkout_needs_a_session_secret_of_at_least_128_bits(shop):
    for session in (None, "too-short", "x" * 21, "has spaces in it 0123456789", "y" * 129):
        headers = {"Idempotency-Key": "k"} | ({"Guest-Session": session} if session else {})
        r = await shop.client.post("/v1/checkout", json=MUG_ORDER, headers=headers)
        assert r.status_code == 400 and r.json()["type"].endswith("guest-session-required"), session
    assert (await shop.checkout(key="k", **{"Guest-Session": "z" * 22})).status_code == 202
    # a signed-in customer is scoped by the account and needs none
    assert (
        await shop.client.post("/v1/checkout", json=MUG_ORDER, headers={"Idempotency-Key": "k", **shop.token("alice")})
    ).status_code == 202


async def test_the_lookup_token_is_stored_nowhere_and_never_read_from_the_url(shop):
    placed = (await shop.checkout(key="t")).json()
    token, order_id = placed["lookup_token"], placed["order_id"]
    assert (await shop.checkout(key="t")).json()["lookup_token"] == token  # replayed, so answered twice
    for table in (idempotency_keys, orders):
        rows = (
            select(func.count())
            .select_from(table)
            .where(cast(func.row_to_json(table.table_valued()), Text).contains(token))
        )
        assert await scalar(shop, rows) == 0, table.name
    async with shop.runtime.db.engine.connect() as conn:
        payloads = (await conn.execute(select(messaging.outbox.c.payload))).scalars().all()
    assert payloads and not any(token.encode() in bytes(p) for p in payloads)

    for method, path in (("GET", ""), ("GET", "/payment-session"), ("POST", "/cancel"), ("POST", "/payment-attempts")):
        r = await shop.client.request(
            method, f"/v1/orders/{order_id}{path}", params={"token": token}, headers={"Idempotency-Key": "p"}
        )
        assert r.status_code == 400 and r.json()["type"].endswith("token-in-query"), path
    order = await shop.client.get(f"/v1/orders/{order_id}", headers={"X-Order-Token": token})
    assert order.status_code == 200 and order.json()["state"] == "draft"  # the refused cancel did nothing


async def test_the_support_limit_counts_every_support_refund_of_the_order(shop):
    assert shop.settings.support_refund_limit == 1000
    order_id = await shop.paid_order()

    async def refund(amount: int, key: str, who: tuple[str, ...] = ("sam", "support")):
        return await shop.client.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"amount": amount, "reason": "goodwill"},
            headers={**shop.token(*who), "Idempotency-Key": key},
        )

    assert (await refund(400, "a")).status_code == 202
    assert (await refund(400, "b", ("sue", "support"))).status_code == 202  # another support agent counts too
    over = await refund(400, "c")
    assert over.status_code == 403 and over.json()["type"].endswith("refund-limit-exceeded")
    assert over.json()["support_refunded"] == 800
    assert (await refund(200, "d")).status_code == 202  # exactly up to the limit
    assert (await refund(1, "e")).status_code == 403
    assert (await refund(1000, "f", ("fiona", "finance"))).status_code == 202  # finance has no limit
    view = await shop.order(order_id)
    assert view["refund_pending_amount"] == 2000

    # at once: the order lock serialises them, so the limit holds
    other = await shop.paid_order(key="paid-2")
    results = await asyncio.gather(
        *(
            shop.client.post(
                f"/v1/admin/orders/{other}/refunds",
                json={"amount": 300, "reason": "goodwill"},
                headers={**shop.token("sam", "support"), "Idempotency-Key": f"x{i}"},
            )
            for i in range(6)
        )
    )
    assert sorted(r.status_code for r in results) == [202, 202, 202, 403, 403, 403]
    granted = select(func.sum(refunds.c.amount)).where(refunds.c.order_id == other)
    assert await scalar(shop, granted) == 900


async def test_staff_read_and_act_only_through_admin_routes_and_under_their_own_name(shop):
    placed = (await shop.checkout(key="s", **shop.token("alice"))).json()
    order_id = placed["order_id"]
    sam = shop.token("sam", "support", "admin", "finance")
    for method, path in (("GET", ""), ("GET", "/payment-session"), ("POST", "/cancel"), ("POST", "/payment-attempts")):
        r = await shop.client.request(method, f"/v1/orders/{order_id}{path}", headers={**sam, "Idempotency-Key": "p"})
        assert r.status_code == 404, path
    admin_view = await shop.client.get(f"/v1/admin/orders/{order_id}", headers=sam)
    assert admin_view.status_code == 200 and admin_view.json()["state"] == "draft"
    assert (await shop.client.get(f"/v1/admin/orders/{order_id}", headers=shop.token("alice"))).status_code == 403

    moved = await shop.client.post(
        f"/v1/admin/orders/{order_id}/transitions",
        json={"to": "needs_review", "reason": "customer called"},
        headers=sam,
    )
    assert moved.status_code == 200, moved.text
    timeline = (await shop.order(order_id))["timeline"]
    assert [(t["to"], t["actor"]) for t in timeline] == [("draft", "alice"), ("needs_review", "staff:sam")]

    paid = await shop.paid_order()
    assert (
        await shop.client.post(
            f"/v1/admin/orders/{paid}/refunds",
            json={"amount": 100, "reason": "goodwill"},
            headers={**sam, "Idempotency-Key": "r"},
        )
    ).status_code == 202
    row = (await shop.order(paid))["refunds"][0]
    assert row["requested_by"] == "sam"


async def test_every_catalogue_change_is_recorded_with_who_why_before_and_after(shop):
    ada = shop.token("ada", "admin")
    change = {
        "reason": "supplier price rise",
        "products": [{"sku": "MUG", "name": "Mug", "unit_price": 1500, "currency": "eur"}],
        "tax_rates": [{"region": "DE", "rate_bp": 700}],
    }
    assert (await shop.client.put("/v1/admin/catalogue", json=change, headers=ada)).status_code == 200

    r = await shop.client.get(
        "/v1/admin/catalogue/changes", params={"kind": "product", "key": "MUG"}, headers=shop.token("fiona", "finance")
    )
    assert r.status_code == 200, r.text
    latest, seeded = r.json()["changes"]
    assert (latest["actor"], latest["reason"]) == ("staff:ada", "supplier price rise")
    assert (latest["before"]["unit_price"], latest["after"]["unit_price"]) == (1250, 1500)
    assert latest["after"]["currency"] == "EUR"
    assert (seeded["before"], seeded["after"]["unit_price"], seeded["reason"]) == (None, 1250, "test catalogue")
    tax = (
        await shop.client.get("/v1/admin/catalogue/changes", params={"kind": "tax_rate", "limit": 1}, headers=ada)
    ).json()["changes"]
    assert [(c["key"], c["before"]["rate_bp"], c["after"]["rate_bp"]) for c in tax] == [("DE", 1900, 700)]
    coupons = (await shop.client.get("/v1/admin/catalogue/changes", params={"kind": "coupon"}, headers=ada)).json()
    assert {c["key"] for c in coupons["changes"]} == {"TENOFF", "FIVE-ONLY", "ONCE"}
    assert (await shop.client.get("/v1/admin/catalogue/changes", headers=shop.token("alice"))).status_code == 403
    assert (await shop.client.get("/v1/admin/catalogue/changes")).status_code == 401

    # a change the database refuses leaves neither the change nor its record behind
    for i in range(2):
        assert (await shop.checkout(dict(MUG_ORDER, coupon_code="FIVE-ONLY"), key=f"five-{i}")).status_code == 202
    refused = {
        "reason": "cap the promotion",
        "products": [{"sku": "MUG", "name": "Mug", "unit_price": 1, "currency": "EUR"}],
        "coupons": [{"code": "FIVE-ONLY", "kind": "fixed", "amount_off": 500, "currency": "EUR", "max_redemptions": 1}],
    }
    r = await shop.client.put("/v1/admin/catalogue", json=refused, headers=ada)
    assert 400 <= r.status_code < 500, r.text
    assert await scalar(shop, select(products.c.unit_price).where(products.c.sku == "MUG")) == 1500
    recorded = (
        select(func.count()).select_from(catalogue_changes).where(catalogue_changes.c.reason == "cap the promotion")
    )
    assert await scalar(shop, recorded) == 0
