"""Declines and retries, customer cancel, and staff refunds across the four services, with the money
checked at the provider (the emulator) and the stock checked in inventory."""

from __future__ import annotations

from handshake_devstack.storefront import DECLINED_CARD
from handshake_devstack.system import wait_for


def test_a_declined_card_then_a_new_attempt_takes_the_money_once(shop):
    placed = shop.checkout([{"sku": "HS-TEE", "quantity": 1}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    first = shop.payment_session(order_id, token)
    shop.pay(first["payment_intent_id"], card=DECLINED_CARD)
    shop.wait_for_state(order_id, token, {"payment_failed"})

    r = shop.new_payment_attempt(order_id, token, key="retry-1")
    assert r.status_code == 202, r.text
    again = shop.new_payment_attempt(order_id, token, key="retry-1")  # a double click is the same attempt
    assert again.json() == r.json()
    second = wait_for(
        lambda: (s := shop.payment_session(order_id, token))["payment_intent_id"] != first["payment_intent_id"] and s,
        30,
    )
    shop.pay(second["payment_intent_id"])
    order = shop.wait_for_state(order_id, token, {"fulfillment_pending"})

    intents = {pi.id: pi for pi in shop.intents_for(order_id)}
    assert set(intents) == {first["payment_intent_id"], second["payment_intent_id"]}
    assert intents[second["payment_intent_id"]].status == "succeeded"
    assert intents[first["payment_intent_id"]].status != "succeeded"
    assert order["payment_intent_id"] == second["payment_intent_id"]
    assert [s["to"] for s in order["timeline"]] == [
        "draft",
        "payment_pending",
        "payment_failed",
        "payment_pending",
        "paid",
        "fulfillment_pending",
    ]


def test_customer_cancel_releases_the_stock_and_cancels_the_intent(shop):
    before = shop.levels("HS-MUG")
    placed = shop.checkout([{"sku": "HS-MUG", "quantity": 4}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    session = shop.payment_session(order_id, token)
    assert shop.levels("HS-MUG")[1] == before[1] + 4

    r = shop.cancel(order_id, token)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    wait_for(lambda: shop.levels("HS-MUG") == before, 30)
    wait_for(lambda: shop.stripe.v1.payment_intents.retrieve(session["payment_intent_id"]).status == "canceled", 30)
    assert shop.order(order_id, token)["state"] == "cancelled"


def test_staff_refunds_partial_then_the_rest_with_restock(shop):
    before = shop.levels("HS-CAP")
    done = shop.full_checkout([{"sku": "HS-CAP", "quantity": 2}])
    order_id, token = done["placed"]["order_id"], done["placed"]["lookup_token"]
    total = done["order"]["total"]
    intent = done["order"]["payment_intent_id"]

    r = shop.refund(order_id, 1000, "one cap arrived scratched")
    assert r.status_code == 202, r.text
    shop.wait_for_state(order_id, token, {"partially_refunded"})
    r = shop.refund(order_id, total, "too much")
    assert r.status_code == 409  # never more than what is left of the capture
    r = shop.refund(order_id, total - 1000, "customer returned everything", restock=True)
    assert r.status_code == 202, r.text
    shop.wait_for_state(order_id, token, {"refunded"})

    refunds = shop.refunds_for(intent)
    assert sorted(rf.amount for rf in refunds) == [1000, total - 1000]
    assert sum(rf.amount for rf in refunds) == total
    wait_for(lambda: shop.levels("HS-CAP") == before, 30)  # both caps back on the shelf
    view = shop.admin_order(order_id)
    assert view["refunded_amount"] == total and [r["state"] for r in view["refunds"]] == ["succeeded", "succeeded"]
