"""A guest's checkout takes stock out of the shop only briefly until somebody is about to pay: the reservation
holds for the short guest hold (180 s by default) and, once the payment session is opened, for the full
checkout hold (900 s) from the placement; the order announces it once on order.events.v1, however often the
storefront asks for the session."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from handshake_devstack.system import wait_for
from handshake_shared.events import ORDER_EVENTS
from tests.kafka_log import read_topics


def reservation(shop, order_id: str) -> dict[str, Any] | None:
    r = shop.http.get(shop.system.url("inventory") + f"/v1/admin/reservations/{order_id}", headers=shop.admin())
    return dict(r.json()) if r.status_code == 200 else None


def held_for(shop, order_id: str) -> float | None:
    found = reservation(shop, order_id)
    if found is None:
        return None
    return (datetime.fromisoformat(found["expires_at"]) - datetime.fromisoformat(found["created_at"])).total_seconds()


def test_a_guest_hold_is_short_until_the_payment_session_is_opened(shop, system):
    placed = shop.checkout([{"sku": "HS-MUG", "quantity": 1}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    assert wait_for(lambda: held_for(shop, order_id), 30) == 180

    shop.payment_session(order_id, token)
    shop.payment_session(order_id, token)

    wait_for(lambda: held_for(shop, order_id) == 900, 30)
    assert reservation(shop, order_id)["state"] == "held"

    def opened() -> list[Any]:
        records = read_topics(system.broker.bootstrap_servers, [ORDER_EVENTS])
        events = [json.loads(r.value) for r in records if r.key == order_id.encode()]
        return [e for e in events if e["type"] == "order.payment_session_opened"]

    announced = wait_for(opened, 30)
    assert [e["data"] for e in announced] == [{"order_id": order_id, "transition": None, "hold_seconds": 900}]

    # the shop's stock as it was for the tests after this one: the customer gives up
    assert shop.cancel(order_id, token).status_code == 200
    wait_for(lambda: reservation(shop, order_id)["state"] == "released", 30)
