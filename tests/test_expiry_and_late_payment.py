"""Reservations lapse, and money that arrives after the order gave up is still money: the order is
fulfilled if stock allows, otherwise refunded in full. Runs on a system of its own (own broker, short
reservation TTL, and no webhook: the late payment is discovered when payment tries to cancel the
intent of the expired order)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from handshake_devstack.storefront import Storefront
from handshake_devstack.system import wait_for
from tests.conftest import system_of_its_own

TTL_SECONDS = 3


@pytest.fixture(scope="module")
def lapse(stack) -> Iterator[Storefront]:
    with system_of_its_own(
        stack,
        "lapse",
        register_webhook=False,
        extra_env={
            "inventory": {
                "HANDSHAKE_RESERVATION_TTL_SECONDS": str(TTL_SECONDS),
                "HANDSHAKE_EXPIRY_SWEEP_INTERVAL_SECONDS": "0.5",
            }
        },
    ) as shop:
        shop.seed(
            catalogue={
                "reason": "lapse test",
                "products": [{"sku": "HS-ONE", "name": "Only one", "unit_price": 4000, "currency": "EUR"}],
            },
            stock={"HS-MUG": 100, "HS-ONE": 1},
        )
        yield shop


def test_an_unpaid_reservation_expires_and_frees_the_stock(lapse):
    before = lapse.levels("HS-MUG")
    placed = lapse.checkout([{"sku": "HS-MUG", "quantity": 3}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    session = lapse.payment_session(order_id, token)
    order = lapse.wait_for_state(order_id, token, {"expired"}, timeout=30)
    assert [s["to"] for s in order["timeline"]] == ["draft", "payment_pending", "expired"]
    wait_for(lambda: lapse.levels("HS-MUG") == before, 30)
    wait_for(lambda: lapse.stripe.v1.payment_intents.retrieve(session["payment_intent_id"]).status == "canceled", 30)


def test_payment_after_expiry_is_fulfilled_when_stock_allows(lapse):
    before = lapse.levels("HS-MUG")
    placed = lapse.checkout([{"sku": "HS-MUG", "quantity": 1}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    session = lapse.payment_session(order_id, token)
    lapse.pay(session["payment_intent_id"])  # taken at the provider; no webhook will tell us

    order = lapse.wait_for_state(order_id, token, {"fulfillment_pending"}, timeout=60)
    steps = [s["to"] for s in order["timeline"]]
    assert steps == ["draft", "payment_pending", "expired", "paid", "fulfillment_pending"]
    assert lapse.levels("HS-MUG") == (before[0] - 1, 0, before[2] + 1)
    assert lapse.refunds_for(session["payment_intent_id"]) == []


def test_payment_after_expiry_without_stock_is_refunded_in_full(lapse):
    system = lapse.system
    placed = lapse.checkout([{"sku": "HS-ONE", "quantity": 1}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    session = lapse.payment_session(order_id, token)
    lapse.pay(session["payment_intent_id"])
    system.stop_service("payment")  # nobody can notice the payment while the hold lapses
    try:
        lapse.wait_for_state(order_id, token, {"expired"}, timeout=30)
        wait_for(lambda: lapse.stock("HS-ONE")["available"] == 1, 30)
        # meanwhile the last unit is gone (sold in the shop downstairs)
        r = lapse.http.put(
            system.url("inventory") + "/v1/admin/stock/HS-ONE",
            json={"available": 0, "reason": "sold over the counter"},
            headers=lapse.admin(),
        )
        r.raise_for_status()
    finally:
        system.start_service("payment")

    order = lapse.wait_for_state(order_id, token, {"cancelled_with_refund"}, timeout=60)
    assert [s["to"] for s in order["timeline"]] == [
        "draft",
        "payment_pending",
        "expired",
        "paid",
        "cancelled_with_refund",
    ]
    refunds = wait_for(lambda: lapse.refunds_for(session["payment_intent_id"]), 30)
    assert [rf.amount for rf in refunds] == [order["total"]]
    wait_for(lambda: [r["state"] for r in lapse.admin_order(order_id)["refunds"]] == ["succeeded"], 30)
    stock = lapse.stock("HS-ONE")
    assert (stock["available"], stock["reserved"], stock["sold"]) == (0, 0, 0)  # nothing sold that was not there
