"""Reserve, commit and release against real PostgreSQL, through the same inbox consumer the app runs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from handshake_inventory import repository as repo
from handshake_inventory.db import messaging, reservations, stock_items, stock_movements
from handshake_shared.envelope import build_event


def oid() -> str:
    return str(uuid.uuid4())


async def test_an_order_that_does_not_fully_fit_reserves_nothing(inventory) -> None:
    await inventory.set_stock("MUG", 5)
    await inventory.set_stock("TEE", 1)
    order = oid()

    cause = await inventory.place(order, ("MUG", 2), ("TEE", 3), ("GHOST", 1))

    # the MUG line fitted, but the order is all or nothing: no unit moved, no reservation exists
    assert await inventory.stock("MUG") == (5, 0, 0)
    assert await inventory.stock("TEE") == (1, 0, 0)
    async with inventory.db.engine.connect() as conn:
        assert await repo.find_reservation(conn, order) is None
        kinds = (await conn.execute(select(stock_movements.c.kind))).scalars().all()
    assert set(kinds) == {"adjust"}
    [event] = await inventory.emitted(order)
    assert event.type == "inventory.rejected" and event.causationid == str(cause.id)
    assert event.data["lines"] == [
        {"sku": "GHOST", "requested": 1, "available": 0, "reason": "unknown_sku"},
        {"sku": "TEE", "requested": 3, "available": 1, "reason": "insufficient_stock"},
    ]


async def test_thirty_buyers_for_ten_units_get_exactly_ten(inventory) -> None:
    await inventory.set_stock("LAST", 10)
    orders = [oid() for _ in range(30)]

    async def buy(order_id: str) -> str:
        async with inventory.db.transaction() as conn:
            return await inventory.handlers.reserve(conn, order_id, [("LAST", 1)], cause=None)

    outcomes = await asyncio.gather(*(buy(o) for o in orders))

    assert sorted(outcomes) == ["rejected"] * 20 + ["reserved"] * 10
    available, reserved, sold = await inventory.stock("LAST")
    assert (available, reserved, sold) == (0, 10, 0)
    assert available + reserved + sold == 10
    assert await inventory.ledger("LAST") == (0, 10, 0)
    events = await inventory.emitted()
    assert sorted(e.type for e in events) == ["inventory.rejected"] * 20 + ["inventory.reserved"] * 10
    async with inventory.db.engine.connect() as conn:
        held = (await conn.execute(select(func.count()).select_from(reservations))).scalar_one()
    assert held == 10


async def test_orders_listing_the_same_skus_in_opposite_order_never_deadlock(inventory) -> None:
    await inventory.set_stock("A", 10)
    await inventory.set_stock("B", 10)

    async def buy(i: int) -> str:
        lines = [("A", 1), ("B", 1)] if i % 2 else [("B", 1), ("A", 1)]
        async with inventory.db.transaction() as conn:
            return await inventory.handlers.reserve(conn, oid(), lines, cause=None)

    # a deadlock would surface here as an error from PostgreSQL's deadlock detector
    outcomes = await asyncio.gather(*(buy(i) for i in range(24)))

    assert outcomes.count("reserved") == 10
    assert await inventory.stock("A") == await inventory.stock("B") == (0, 10, 0)


async def test_the_database_refuses_negative_stock_and_unit_creating_movements(inventory) -> None:
    await inventory.set_stock("MUG", 1)
    async with inventory.db.engine.connect() as conn:
        with pytest.raises(IntegrityError, match="available_non_negative"):
            await conn.execute(update(stock_items).values(available=stock_items.c.available - 2))
        await conn.rollback()
        with pytest.raises(IntegrityError, match="only_adjustments_change_total"):
            await conn.execute(
                insert(stock_movements).values(
                    sku="MUG",
                    kind="reserve",
                    delta_available=0,
                    delta_reserved=1,
                    delta_sold=0,
                    reason="bug",
                    actor="x",
                )
            )
    with pytest.raises(repo.StockInvariantViolated):
        async with inventory.db.transaction() as conn:
            await repo.move(conn, "MUG", repo.MovementKind.COMMIT, 1, reason="bug", actor="x")
    assert await inventory.stock("MUG") == (1, 0, 0)


async def test_commit_sells_release_returns_and_nothing_moves_twice(inventory) -> None:
    await inventory.set_stock("MUG", 5)

    paid_order = oid()
    await inventory.place(paid_order, ("MUG", 2))
    assert await inventory.stock("MUG") == (3, 2, 0)
    async with inventory.db.engine.connect() as conn:
        reservation = await repo.find_reservation(conn, paid_order)
    assert reservation.state == "held"
    assert reservation.expires_at - reservation.created_at == timedelta(seconds=inventory.handlers.ttl_seconds)

    await inventory.pay(paid_order)
    assert await inventory.stock("MUG") == (3, 0, 2)
    await inventory.pay(paid_order)  # a second order.paid (another event id) sells nothing more
    assert await inventory.stock("MUG") == (3, 0, 2)
    assert [e.type for e in await inventory.emitted(paid_order)] == ["inventory.reserved", "inventory.committed"]

    cancelled_order = oid()
    await inventory.place(cancelled_order, ("MUG", 1))
    assert await inventory.stock("MUG") == (2, 1, 2)
    await inventory.cancel(cancelled_order)
    assert await inventory.stock("MUG") == (3, 0, 2)
    await inventory.cancel(cancelled_order)  # a second cancel finds nothing held
    assert await inventory.stock("MUG") == (3, 0, 2)
    reserved, released = await inventory.emitted(cancelled_order)
    assert (reserved.type, released.type) == ("inventory.reserved", "inventory.released")
    assert released.data["reason"] == "order_cancelled"

    expired_order = oid()
    await inventory.place(expired_order, ("MUG", 3))
    await inventory.expire(expired_order)
    await inventory.cancel(expired_order)  # already released: nothing moves twice
    assert await inventory.stock("MUG") == (3, 0, 2)
    assert [e.data.get("reason") for e in await inventory.emitted(expired_order)] == [None, "order_expired"]

    unknown = oid()
    payment = await inventory.pay(unknown)
    [failed] = await inventory.emitted(unknown)
    assert failed.type == "inventory.commit_failed" and failed.causationid == str(payment.id)
    assert failed.data == {"order_id": unknown, "reason": "reservation_missing", "lines": []}
    assert await inventory.stock("MUG") == (3, 0, 2)

    # the ledger explains every unit: its sums are the stock, and only the admin count changed the total
    assert await inventory.ledger("MUG") == await inventory.stock("MUG")
    async with inventory.db.engine.connect() as conn:
        total_changes = (
            (
                await conn.execute(
                    text("SELECT kind FROM stock_movements WHERE delta_available + delta_reserved + delta_sold <> 0")
                )
            )
            .scalars()
            .all()
        )
    assert total_changes == ["adjust"]


async def test_a_redelivered_order_placed_reserves_once(inventory) -> None:
    await inventory.set_stock("MUG", 5)
    order = oid()
    event = await inventory.place(order, ("MUG", 2))
    assert await inventory.deliver(event) == "duplicate"
    assert await inventory.stock("MUG") == (3, 2, 0)
    assert [e.type for e in await inventory.emitted(order)] == ["inventory.reserved"]


async def test_an_order_placed_without_lines_is_dead_lettered_not_reserved(inventory) -> None:
    order = oid()
    event = build_event(
        service="order",
        type="order.placed",
        order_id=order,
        sequence=1,
        data={"order_id": order, "currency": "EUR", "total": 0, "lines": []},
    )
    assert await inventory.deliver(event) == "dead_lettered"
    ob = messaging.outbox
    async with inventory.db.engine.connect() as conn:
        letters = (await conn.execute(select(messaging.dead_letters.c.event_id))).scalars().all()
        queued = (await conn.execute(select(ob.c.topic, ob.c.event_type))).all()
        assert await repo.find_reservation(conn, order) is None
    assert letters == [str(event.id)]
    assert [tuple(q) for q in queued] == [("order.events.v1.dlq", "order.placed")]  # no inventory event at all
