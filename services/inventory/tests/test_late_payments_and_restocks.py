"""Money after the hold lapsed, manual capture, cancels after commit and refunds with restock, against
real PostgreSQL through the inbox consumer the app runs."""

from __future__ import annotations

import uuid

import pytest


def refund_id(name: str) -> str:
    """Order makes refund ids as UUIDs; a name for each reads better in a test."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def oid() -> str:
    return str(uuid.uuid4())


# each way a hold lapses: (the reservation state it leaves, the ledger movement that returned the units)


async def lapse_by_sweeper(inventory, order: str) -> tuple[str, str]:
    await inventory.overdue(order)
    assert await inventory.sweep() == 1
    return "expired", "expire"


async def lapse_by_order_expiry(inventory, order: str) -> tuple[str, str]:
    await inventory.expire(order)
    return "released", "release"


async def lapse_by_customer_cancel(inventory, order: str) -> tuple[str, str]:
    await inventory.cancel(order)
    return "released", "release"


@pytest.mark.parametrize("lapse", [lapse_by_sweeper, lapse_by_order_expiry, lapse_by_customer_cancel])
@pytest.mark.parametrize("money", ["pay", "authorize"])
async def test_money_after_the_hold_lapsed_re_reserves_and_commits_at_once(inventory, lapse, money: str) -> None:
    await inventory.set_stock("MUG", 5)
    await inventory.set_stock("TEE", 2)
    order = oid()
    await inventory.place(order, ("TEE", 1), ("MUG", 2))
    lapsed_state, returned = await lapse(inventory, order)
    assert await inventory.stock("MUG") == (5, 0, 0)

    payment = await getattr(inventory, money)(order)

    assert await inventory.stock("MUG") == (3, 0, 2)
    assert await inventory.stock("TEE") == (1, 0, 1)
    reserved, *_, committed = await inventory.emitted(order)
    assert committed.type == "inventory.committed" and committed.causationid == str(payment.id)
    assert committed.data == {"order_id": order, "reservation_id": reserved.data["reservation_id"], "rereserved": True}
    assert await inventory.movements(order) == [
        ("reserve", "MUG", 2),
        ("reserve", "TEE", 1),
        (returned, "MUG", 2),
        (returned, "TEE", 1),
        ("reserve", "MUG", 2),
        ("reserve", "TEE", 1),
        ("commit", "MUG", 2),
        ("commit", "TEE", 1),
    ]
    assert await inventory.history(order) == [(None, "held"), ("held", lapsed_state), (lapsed_state, "committed")]

    # the other money event for the same order (capture after authorization, or a redelivery under a
    # new id) never sells twice
    await inventory.pay(order)
    await inventory.authorize(order)
    assert await inventory.stock("MUG") == (3, 0, 2)
    assert [e.type for e in await inventory.emitted(order)].count("inventory.committed") == 1
    assert await inventory.ledger("MUG") == await inventory.stock("MUG")


async def test_a_late_payment_sells_nothing_when_any_line_is_short(inventory) -> None:
    await inventory.set_stock("MUG", 5)
    await inventory.set_stock("TEE", 1)
    late, other = oid(), oid()
    await inventory.place(late, ("MUG", 2), ("TEE", 1))
    await lapse_by_sweeper(inventory, late)
    await inventory.place(other, ("TEE", 1))  # someone else bought the last TEE meanwhile

    payment = await inventory.pay(late)

    # all or nothing: the MUG line would have fitted, but no unit moved
    assert await inventory.stock("MUG") == (5, 0, 0)
    assert await inventory.stock("TEE") == (0, 1, 0)
    failed = (await inventory.emitted(late))[-1]
    assert failed.type == "inventory.commit_failed" and failed.causationid == str(payment.id)
    assert failed.data == {
        "order_id": late,
        "reason": "insufficient_stock",
        "lines": [{"sku": "TEE", "requested": 1, "available": 0, "reason": "insufficient_stock"}],
    }
    assert (await inventory.reservation(late)).state == "expired"
    assert [k for k, _, _ in await inventory.movements(late)] == ["reserve", "reserve", "expire", "expire"]


async def test_manual_capture_commits_on_authorization_and_the_capture_is_then_a_no_op(inventory) -> None:
    await inventory.set_stock("MUG", 5)
    order = oid()
    await inventory.place(order, ("MUG", 2))

    authorization = await inventory.authorize(order)
    assert await inventory.stock("MUG") == (3, 0, 2)
    await inventory.pay(order)  # captured: the units were already sold at authorization

    assert await inventory.stock("MUG") == (3, 0, 2)
    _reserved, committed = await inventory.emitted(order)
    assert committed.type == "inventory.committed" and committed.causationid == str(authorization.id)
    assert committed.data["rereserved"] is False
    assert await inventory.movements(order) == [("reserve", "MUG", 2), ("commit", "MUG", 2)]
    assert await inventory.history(order) == [(None, "held"), ("held", "committed")]


async def test_a_cancel_after_commit_restocks_once_and_a_cancel_before_commit_releases(inventory) -> None:
    await inventory.set_stock("MUG", 5)
    captured_failed, unpaid = oid(), oid()
    await inventory.place(captured_failed, ("MUG", 2))
    await inventory.place(unpaid, ("MUG", 1))
    await inventory.authorize(captured_failed)
    assert await inventory.stock("MUG") == (2, 1, 2)

    cancel = await inventory.cancel(captured_failed, reason="capture failed: authorization expired")
    await inventory.cancel(unpaid, reason="customer changed their mind")

    assert await inventory.stock("MUG") == (5, 0, 0)  # sold units and held units both back on the shelf
    restocked = (await inventory.emitted(captured_failed))[-1]
    assert restocked.type == "inventory.restocked" and restocked.causationid == str(cancel.id)
    assert restocked.data == {
        "order_id": captured_failed,
        "reason": "capture failed: authorization expired",
        "lines": [{"sku": "MUG", "quantity": 2}],
    }
    assert (await inventory.emitted(unpaid))[-1].type == "inventory.released"
    assert await inventory.history(captured_failed) == [
        (None, "held"),
        ("held", "committed"),
        ("committed", "restocked"),
    ]

    await inventory.cancel(captured_failed)  # a second cancel: nothing is sold any more
    assert await inventory.stock("MUG") == (5, 0, 0)
    assert len(await inventory.emitted(captured_failed)) == 3

    # the capture went through after all (money is truth): the units are bought again from the shelf
    await inventory.pay(captured_failed)
    assert await inventory.stock("MUG") == (3, 0, 2)
    assert (await inventory.emitted(captured_failed))[-1].data["rereserved"] is True
    assert await inventory.ledger("MUG") == await inventory.stock("MUG")


async def test_a_refund_with_restock_returns_the_sold_units_once(inventory) -> None:
    await inventory.set_stock("MUG", 5)
    await inventory.set_stock("TEE", 3)
    order, unpaid = oid(), oid()
    await inventory.place(order, ("MUG", 2), ("TEE", 1))
    await inventory.place(unpaid, ("TEE", 1))
    await inventory.pay(order)
    assert (await inventory.stock("MUG"), await inventory.stock("TEE")) == ((3, 0, 2), (1, 1, 1))

    await inventory.refund(order, refund_id("re_keep"), restock=False)  # money back, goods kept: stock untouched
    assert (await inventory.stock("MUG"), await inventory.stock("TEE")) == ((3, 0, 2), (1, 1, 1))
    assert len(await inventory.emitted(order)) == 2

    refund = await inventory.refund(order, refund_id("re_back"), restock=True, partial=True)
    assert (await inventory.stock("MUG"), await inventory.stock("TEE")) == ((5, 0, 0), (2, 1, 0))
    restocked = (await inventory.emitted(order))[-1]
    assert restocked.type == "inventory.restocked" and restocked.causationid == str(refund.id)
    assert restocked.data == {
        "order_id": order,
        "reason": f"refund {refund_id('re_back')}",
        "lines": [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}],
    }

    await inventory.refund(order, refund_id("re_again"), restock=True)  # the units went back once already
    await inventory.refund(unpaid, refund_id("re_unpaid"), restock=True)  # nothing was sold: nothing to restock
    await inventory.refund(oid(), refund_id("re_unknown"), restock=True)
    assert (await inventory.stock("MUG"), await inventory.stock("TEE")) == ((5, 0, 0), (2, 1, 0))
    assert len(await inventory.emitted(order)) == 3 and len(await inventory.emitted(unpaid)) == 1
    assert (await inventory.reservation(order)).state == "restocked"
    assert (await inventory.reservation(unpaid)).state == "held"
    assert [k for k, _, _ in await inventory.movements(order)][-2:] == ["restock", "restock"]
    assert await inventory.ledger("TEE") == await inventory.stock("TEE")
