"""How long a reservation holds its stock: what the order asks for (a guest's short hold, lengthened to the
full checkout hold when the payment session is opened), never past inventory's own maximum
(reservation_ttl_seconds, 600 here), and never lengthened once it holds nothing."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from handshake_shared.envelope import CloudEvent


def oid() -> str:
    return str(uuid.uuid4())


def placed_with_hold(inventory, order_id: str, hold_seconds: int | None) -> CloudEvent:
    event = inventory.events.placed(order_id, ("MUG", 2))
    data = {**event.data, "hold_seconds": hold_seconds} if hold_seconds is not None else event.data
    return event.model_copy(update={"data": data})


def session_opened(inventory, order_id: str, hold_seconds: int) -> CloudEvent:
    return inventory.events.order_event(
        "order.payment_session_opened", order_id, {"order_id": order_id, "hold_seconds": hold_seconds}, sequence=4
    )


async def held_for(inventory, order_id: str) -> float:
    r = await inventory.reservation(order_id)
    return float((r.expires_at - r.created_at).total_seconds())


def lengthened_total() -> float:
    return REGISTRY.get_sample_value("handshake_inventory_holds_extended_total") or 0.0


async def test_a_short_hold_becomes_the_full_one_when_the_payment_session_is_opened(inventory) -> None:
    await inventory.set_stock("MUG", 10)
    guest = oid()
    await inventory.applied(placed_with_hold(inventory, guest, 180))
    assert await held_for(inventory, guest) == 180
    before = lengthened_total()

    await inventory.applied(session_opened(inventory, guest, 900))

    # the full hold asked for (900 s) is more than inventory allows: its maximum, counted from the reservation
    assert await held_for(inventory, guest) == 600
    assert lengthened_total() == before + 1
    assert (await inventory.reservation(guest)).state == "held"
    assert await inventory.stock("MUG") == (8, 2, 0)  # the same two units, held longer; nothing else moved

    # a second request (redelivered under a new id, or sent again) never shortens it
    await inventory.applied(session_opened(inventory, guest, 300))
    assert await held_for(inventory, guest) == 600


async def test_a_hold_is_never_longer_than_inventory_allows(inventory) -> None:
    await inventory.set_stock("MUG", 10)
    asks_too_much, asks_nothing = oid(), oid()
    await inventory.applied(placed_with_hold(inventory, asks_too_much, 86_400))
    await inventory.applied(placed_with_hold(inventory, asks_nothing, None))
    assert await held_for(inventory, asks_too_much) == await held_for(inventory, asks_nothing) == 600


async def test_a_hold_that_lapsed_first_stays_lapsed(inventory) -> None:
    await inventory.set_stock("MUG", 10)
    late, cancelled = oid(), oid()
    for order_id in (late, cancelled):
        await inventory.applied(placed_with_hold(inventory, order_id, 180))
    await inventory.overdue(late)
    assert await inventory.sweep() == 1
    await inventory.cancel(cancelled)
    assert await inventory.stock("MUG") == (10, 0, 0)
    before = lengthened_total()

    for order_id in (late, cancelled):
        await inventory.applied(session_opened(inventory, order_id, 900))

    assert [(await inventory.reservation(o)).state for o in (late, cancelled)] == ["expired", "released"]
    assert await inventory.stock("MUG") == (10, 0, 0)
    assert lengthened_total() == before
