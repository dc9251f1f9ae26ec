"""How much stock a checkout may take out of the shop, and for how long: at most max_units_per_order units in
one order; at most max_units_held_per_holder across one holder's unpaid orders (a signed-in customer, or a
guest's client address), refused with 429 and a Retry-After taken from the holds themselves, holding nothing;
a guest's order asks inventory for a short hold until its payment session is opened."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from handshake_devstack.testing.fixtures import isolated_kafka_settings
from handshake_order.settings import OrderSettings

PROBLEM = "application/problem+json"


def order_of(units_mug: int, units_tee: int = 0) -> dict[str, Any]:
    lines = [{"sku": "MUG", "quantity": units_mug}] + ([{"sku": "TEE", "quantity": units_tee}] if units_tee else [])
    return {"lines": lines, "region": "DE", "shipping_method": "standard"}


async def placed_payload(shop, order_id: str) -> dict[str, Any]:
    async with shop.runtime.db.engine.connect() as conn:
        raw = (
            await conn.execute(
                text("SELECT payload FROM outbox WHERE event_type = 'order.placed' AND message_key = :k"),
                {"k": order_id},
            )
        ).scalar_one()
    return dict(json.loads(bytes(raw))["data"])


async def test_one_order_holds_at_most_the_unit_limit(shop) -> None:
    # 60 + 41 units of two products: every line is small, the order is not
    too_many = order_of(60, 41)
    for r in (await shop.checkout(too_many, key="too-many"), await shop.client.post("/v1/quotes", json=too_many)):
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"].endswith("/too-many-units")
        assert "100" in r.json()["detail"]
    assert await shop.held() == (0, 0)

    r = await shop.checkout(order_of(60, 40), key="at-limit")
    assert r.status_code == 202, r.text
    assert sum(line["quantity"] for line in r.json()["snapshot"]["lines"]) == 100


async def test_a_guest_order_asks_for_the_short_hold_a_customers_for_the_full_one(shop) -> None:
    guest = (await shop.checkout(key="guest")).json()["order_id"]
    customer = (await shop.checkout(key="customer", **shop.token("cus-hold"))).json()["order_id"]

    assert (await placed_payload(shop, guest))["hold_seconds"] == shop.settings.guest_hold_seconds == 180
    assert (await placed_payload(shop, customer)).get("hold_seconds") is None


class TestTheHeldUnitsCap:
    @pytest.fixture
    def settings(self, stack, fresh_database) -> OrderSettings:
        # the rates are generous: only the held-units cap can refuse here
        return OrderSettings(
            database_url=fresh_database("handshake_order"),
            rate_limits_enabled=True,
            trusted_proxy_hops=1,
            checkout_burst_per_address=100,
            checkout_burst_per_customer=100,
            max_units_per_order=5,
            max_units_held_per_holder=8,
            guest_hold_seconds=120,
            checkout_hold_seconds=600,
            **isolated_kafka_settings(stack),
        )

    @staticmethod
    def assert_refused(r: Any, *, within: tuple[int, int]) -> None:
        assert r.status_code == 429, r.text
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"].endswith("/held-units-exhausted")
        # until the oldest hold lapses: the guest's short hold or the full one
        assert within[0] <= int(r.headers["Retry-After"]) <= within[1]

    async def test_a_guest_address_holds_at_most_the_cap_and_a_refused_checkout_holds_nothing(self, shop) -> None:
        first = await shop.checkout(order_of(5), key="a1", **shop.from_address("203.0.113.7"))
        assert first.status_code == 202, first.text
        before = await shop.held()

        # another browser behind the same address counts towards the same cap
        self.assert_refused(
            await shop.checkout(
                order_of(4),
                key="a2",
                **{"Guest-Session": "browser-two-Zm9vYmFyYmF6cXV4"},
                **shop.from_address("203.0.113.7"),
            ),
            within=(110, 120),
        )
        assert await shop.held() == before == (1, 1)

        # what still fits is taken; another address has a cap of its own
        assert (await shop.checkout(order_of(3), key="a3", **shop.from_address("203.0.113.7"))).status_code == 202
        assert (await shop.checkout(order_of(5), key="b1", **shop.from_address("198.51.100.1"))).status_code == 202

        # a cancelled order holds nothing any more
        body = first.json()
        cancelled = await shop.client.post(
            f"/v1/orders/{body['order_id']}/cancel", headers={"X-Order-Token": body["lookup_token"]}
        )
        assert cancelled.status_code == 200, cancelled.text
        assert (await shop.checkout(order_of(5), key="a4", **shop.from_address("203.0.113.7"))).status_code == 202

    async def test_a_signed_in_customer_holds_at_most_the_cap_from_any_address(self, shop) -> None:
        customer = shop.token("cus-hoarder")
        assert (
            await shop.checkout(order_of(5), key="c1", **customer, **shop.from_address("192.0.2.1"))
        ).status_code == 202
        # a customer's order holds for the full checkout time at once
        self.assert_refused(
            await shop.checkout(order_of(4), key="c2", **customer, **shop.from_address("192.0.2.2")), within=(590, 600)
        )
        assert await shop.held() == (1, 1)
        # the same address is not the same holder
        assert (await shop.checkout(order_of(5), key="g1", **shop.from_address("192.0.2.2"))).status_code == 202
