"""The reservation expiry sweeper against real PostgreSQL: what it expires, replicas, and its race with
a payment committing the same reservation."""

from __future__ import annotations

import asyncio
import uuid

from prometheus_client import REGISTRY

from handshake_inventory import repository as repo


def oid() -> str:
    return str(uuid.uuid4())


def expired_total() -> float:
    return REGISTRY.get_sample_value("handshake_inventory_reservations_total", {"outcome": "expired"}) or 0.0


async def drain(sweeper) -> int:
    total = 0
    while n := await sweeper.sweep_once():
        total += n
    return total


async def test_the_sweeper_expires_only_held_reservations_past_their_expiry(inventory) -> None:
    await inventory.set_stock("MUG", 10)
    await inventory.set_stock("TEE", 5)
    due, not_yet, sold = oid(), oid(), oid()
    await inventory.place(due, ("MUG", 2), ("TEE", 1))
    await inventory.place(not_yet, ("MUG", 1))
    await inventory.place(sold, ("MUG", 3))
    await inventory.pay(sold)
    await inventory.overdue(due, sold)  # the paid one is past its expiry too, but it is no longer held
    assert await inventory.stock("MUG") == (4, 3, 3)
    before = expired_total()

    assert await inventory.sweep() == 1

    assert await inventory.stock("MUG") == (6, 1, 3)  # only the two units of `due` came back
    assert await inventory.stock("TEE") == (5, 0, 0)
    assert [(await inventory.reservation(o)).state for o in (due, not_yet, sold)] == ["expired", "held", "committed"]
    reserved, expired = await inventory.emitted(due)
    assert expired.type == "inventory.reservation_expired" and expired.causationid is None
    assert expired.data == {"order_id": due, "reservation_id": reserved.data["reservation_id"], "reason": "expired"}
    assert await inventory.movements(due) == [
        ("reserve", "MUG", 2),
        ("reserve", "TEE", 1),
        ("expire", "MUG", 2),
        ("expire", "TEE", 1),
    ]
    assert await inventory.history(due) == [(None, "held"), ("held", "expired")]
    assert expired_total() == before + 1

    # nothing is due any more; and the order service's own order.expired finds nothing left to release
    assert await inventory.sweep() == 0
    await inventory.expire(due)
    assert await inventory.stock("MUG") == (6, 1, 3)
    assert len(await inventory.emitted(due)) == 2
    assert await inventory.ledger("MUG") == await inventory.stock("MUG")


async def test_two_replicas_expire_each_reservation_once_in_bounded_batches(inventory) -> None:
    await inventory.set_stock("A", 30)
    await inventory.set_stock("B", 30)
    orders = [oid() for _ in range(24)]
    for i, order in enumerate(orders):
        # opposite line orders: the sweeper must lock stock rows in SKU order like every other writer
        await inventory.place(order, *([("A", 1), ("B", 1)] if i % 2 else [("B", 1), ("A", 1)]))
    await inventory.overdue(*orders)
    assert await inventory.stock("A") == (6, 24, 0)

    first, second = inventory.sweeper(batch_size=5), inventory.sweeper(batch_size=5)
    assert await first.sweep_once() == 5  # bounded: a backlog is worked off in small transactions
    assert await inventory.stock("A") == (11, 19, 0)

    expired_by_each = await asyncio.gather(drain(first), drain(second))

    assert sum(expired_by_each) == 19
    assert await inventory.stock("A") == await inventory.stock("B") == (30, 0, 0)
    assert await inventory.ledger("A") == (30, 0, 0)
    events = await inventory.emitted()
    expiries = [e.subject for e in events if e.type == "inventory.reservation_expired"]
    assert sorted(expiries) == sorted(orders)  # every order told exactly once
    for order in orders[:3]:
        assert [k for k, _, _ in await inventory.movements(order)] == ["reserve", "reserve", "expire", "expire"]


async def test_a_sweep_skips_a_reservation_a_payment_is_committing(inventory) -> None:
    await inventory.set_stock("MUG", 4)
    order = oid()
    await inventory.place(order, ("MUG", 3))
    await inventory.overdue(order)

    # the payment holds the reservation's row lock (its transaction is still open) while the sweep runs
    async with inventory.db.transaction() as conn:
        assert await inventory.handlers.commit(conn, order, cause=None) == "committed"
        assert await asyncio.wait_for(inventory.sweep(), timeout=5) == 0  # skipped, not waited for

    assert await inventory.sweep() == 0  # committed now: nothing to expire
    assert await inventory.stock("MUG") == (1, 0, 3)
    assert [e.type for e in await inventory.emitted(order)] == ["inventory.reserved", "inventory.committed"]
    assert await inventory.history(order) == [(None, "held"), ("held", "committed")]


async def test_a_payment_blocked_behind_the_sweeper_finds_the_reservation_expired_and_re_reserves(
    inventory,
) -> None:
    await inventory.set_stock("MUG", 4)
    order = oid()
    await inventory.place(order, ("MUG", 3))
    await inventory.overdue(order)

    async with inventory.db.transaction() as conn:
        reservation = await repo.lock_overdue_held(conn)
        await inventory.handlers.expire(conn, reservation)
        payment = asyncio.create_task(inventory.deliver(inventory.events.paid(order)))
        await asyncio.sleep(0.3)
        assert not payment.done()  # waiting on the reservation row, not deciding on a stale `held`
    assert await payment == "applied"

    # expired (units back), then re-reserved and sold: the 3 units were sold once, never double-counted
    assert await inventory.stock("MUG") == (1, 0, 3)
    assert await inventory.movements(order) == [
        ("reserve", "MUG", 3),
        ("expire", "MUG", 3),
        ("reserve", "MUG", 3),
        ("commit", "MUG", 3),
    ]
    _, expired, committed = await inventory.emitted(order)
    assert (expired.type, committed.type, committed.data["rereserved"]) == (
        "inventory.reservation_expired",
        "inventory.committed",
        True,
    )


async def test_payments_racing_two_sweepers_sell_every_unit_exactly_once(inventory) -> None:
    await inventory.set_stock("LAST", 20)  # exactly the units the orders hold: nothing spare to oversell
    orders = [oid() for _ in range(20)]
    for order in orders:
        await inventory.place(order, ("LAST", 1))
    await inventory.overdue(*orders)

    outcomes = await asyncio.gather(
        drain(inventory.sweeper(batch_size=3)),
        drain(inventory.sweeper(batch_size=3)),
        *(inventory.deliver(inventory.events.paid(order)) for order in orders),
    )

    assert outcomes[2:] == ["applied"] * 20
    assert await inventory.stock("LAST") == (0, 0, 20)
    assert await inventory.ledger("LAST") == (0, 0, 20)
    for order in orders:
        events = await inventory.emitted(order)
        [committed] = [e for e in events if e.type == "inventory.committed"]
        kinds = [k for k, _, _ in await inventory.movements(order)]
        # either the payment won (sold the held unit) or the sweeper did (and the payment re-reserved)
        if "inventory.reservation_expired" in [e.type for e in events]:
            assert committed.data["rereserved"] and kinds == ["reserve", "expire", "reserve", "commit"]
            assert await inventory.history(order) == [(None, "held"), ("held", "expired"), ("expired", "committed")]
        else:
            assert not committed.data["rereserved"] and kinds == ["reserve", "commit"]
            assert await inventory.history(order) == [(None, "held"), ("held", "committed")]
