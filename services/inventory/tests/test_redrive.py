"""A placement sent again (the order re-drives a draft that never heard back) gets the answer it
missed, and nothing is reserved twice."""

from __future__ import annotations

import uuid

from handshake_shared.envelope import build_event


async def test_a_re_sent_placement_is_answered_with_the_reservation_already_held(inventory):
    await inventory.set_stock("MUG", 5)
    order_id = str(uuid.uuid4())
    await inventory.place(order_id, ("MUG", 2))
    again = build_event(
        service="order",
        type="order.placed",
        order_id=order_id,
        sequence=7,
        data={"order_id": order_id, "currency": "EUR", "total": 100, "lines": [{"sku": "MUG", "quantity": 2}]},
    )
    assert await inventory.deliver(again) == "applied"  # a new event id: the inbox lets it through

    assert await inventory.stock("MUG") == (3, 2, 0)
    reserved = [e for e in await inventory.emitted(order_id) if e.type == "inventory.reserved"]
    assert len(reserved) == 2
    assert reserved[0].data["reservation_id"] == reserved[1].data["reservation_id"]
    assert reserved[1].causationid == str(again.id)
