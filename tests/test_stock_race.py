"""Fifty customers, ten units: exactly ten orders are fulfilled, forty cancelled, and stock is never
negative nor invented at any moment in between."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from handshake_devstack.storefront import Storefront

SKU = "HS-LAST"
UNITS = 10
BUYERS = 50


def test_fifty_buyers_for_the_last_ten_units(shop, system):
    catalogue = {
        "reason": "race test",
        "products": [{"sku": SKU, "name": "Last units", "unit_price": 9900, "currency": "EUR"}],
    }
    shop.seed(catalogue=catalogue, stock={SKU: UNITS})

    observations: list[dict] = []
    stop = threading.Event()

    def observe() -> None:
        with httpx.Client(timeout=5.0) as http:
            while not stop.is_set():
                r = http.get(system.url("inventory") + f"/v1/admin/stock/{SKU}", headers=shop.admin())
                observations.append(r.json())

    def buy(i: int) -> str:
        me = Storefront(system, httpx.Client(timeout=30.0), poll_interval=0.1)
        placed = me.checkout([{"sku": SKU, "quantity": 1}])
        order_id, token = placed["order_id"], placed["lookup_token"]
        state = me.wait_for_state(order_id, token, {"payment_pending", "cancelled"}, timeout=90)["state"]
        if state == "cancelled":
            return "cancelled"
        session = me.payment_session(order_id, token)
        me.pay(session["payment_intent_id"])
        return me.wait_for_state(order_id, token, {"fulfillment_pending"}, timeout=90)["state"]

    watcher = threading.Thread(target=observe)
    watcher.start()
    try:
        with ThreadPoolExecutor(BUYERS) as pool:
            outcomes = list(pool.map(buy, range(BUYERS)))
    finally:
        stop.set()
        watcher.join()

    assert outcomes.count("fulfillment_pending") == UNITS
    assert outcomes.count("cancelled") == BUYERS - UNITS
    final = shop.stock(SKU)
    assert (final["available"], final["reserved"], final["sold"]) == (0, 0, UNITS)
    assert len(observations) > 5
    for seen in observations:
        assert min(seen["available"], seen["reserved"], seen["sold"]) >= 0, seen
        assert seen["available"] + seen["reserved"] + seen["sold"] == UNITS, seen
