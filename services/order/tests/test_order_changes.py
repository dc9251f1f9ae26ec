"""A storefront waits for its order to change instead of asking on a timer: a long-poll is woken by the
commit of the change (LISTEN/NOTIFY), answers at once when the client's version is stale, and otherwise
answers unchanged when its timeout passes. Status reads leave the timeline out when asked, and a payment
session that cannot exist yet is refused from the order's own row, without asking payment, or waited for in
the same request while the order is still on its way to it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import text

from handshake_devstack.testing.fixtures import eventually
from handshake_order.changes import OrderChanges

MUG_TOTAL = 2500 + 475 + 495


async def guest_order(shop: Any, key: str = "k") -> tuple[str, dict[str, str]]:
    r = await shop.checkout(key=key)
    assert r.status_code == 202, r.text
    return r.json()["order_id"], {"X-Order-Token": r.json()["lookup_token"]}


async def read(shop: Any, order_id: str, headers: dict[str, str], **params: Any) -> Any:
    return await shop.client.get(f"/v1/orders/{order_id}", headers=headers, params=params)


def intent_created(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "attempt_id": "00000000-0000-4000-8000-0000000000a1",
        "payment_intent_id": "pi_1",
        "amount": MUG_TOTAL,
        "currency": "EUR",
    }


async def listening(shop: Any) -> OrderChanges:
    changes: OrderChanges = shop.app.state.changes
    await asyncio.wait_for(changes.listening.wait(), 15)
    return changes


async def test_a_waiting_read_is_answered_by_the_commit_of_the_change(shop):
    order_id, headers = await guest_order(shop)
    changes = await listening(shop)
    seen = (await read(shop, order_id, headers, timeline="false")).json()
    assert seen["state"] == "draft"

    waiting = asyncio.create_task(
        read(shop, order_id, headers, wait_for_change=seen["version"], timeout=30, timeline="false")
    )

    async def registered() -> bool:
        return changes.waiting == 1

    await eventually(registered)
    assert not waiting.done()
    await shop.deliver("payment.intent_created", order_id, intent_created(order_id))

    answer = await waiting
    assert answer.status_code == 200
    body = answer.json()
    # the answer is the change itself; a timeout would have answered with the version it was given
    assert body["version"] > seen["version"]
    assert body["state"] == "payment_pending" and body["payment_intent_id"] == "pi_1"
    assert answer.headers["ETag"] == f'"{body["version"]}"'
    assert "timeline" not in body
    assert changes.waiting == 0


async def test_a_stale_version_is_answered_at_once_with_the_current_order(shop):
    order_id, headers = await guest_order(shop)
    before = (await read(shop, order_id, headers)).json()["version"]
    await shop.deliver("payment.intent_created", order_id, intent_created(order_id))

    answer = await read(shop, order_id, headers, wait_for_change=before, timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert body["version"] > before and body["state"] == "payment_pending"
    # with the timeline unless asked otherwise, as a plain read
    assert [step["to"] for step in body["timeline"]] == ["draft", "payment_pending"]


async def test_a_wait_that_sees_no_change_answers_the_unchanged_order_when_its_timeout_passes(shop):
    order_id, headers = await guest_order(shop)
    await listening(shop)
    seen = (await read(shop, order_id, headers)).json()

    answer = await read(shop, order_id, headers, wait_for_change=seen["version"], timeout=0.3, timeline="false")
    assert answer.status_code == 200
    assert answer.json()["version"] == seen["version"] and answer.json()["state"] == "draft"
    assert answer.headers["ETag"] == f'"{seen["version"]}"'


async def test_a_change_made_while_the_listener_reconnects_still_wakes_the_waiter(shop):
    order_id, headers = await guest_order(shop)
    changes = await listening(shop)
    connects = changes.connects
    async with shop.runtime.db.engine.connect() as conn:
        killed = (
            await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
        ).scalar_one()
    assert killed == 1

    async def reconnected() -> bool:
        return changes.connects > connects and changes.listening.is_set()

    await eventually(reconnected)
    seen = (await read(shop, order_id, headers, timeline="false")).json()
    waiting = asyncio.create_task(
        read(shop, order_id, headers, wait_for_change=seen["version"], timeout=30, timeline="false")
    )

    async def registered() -> bool:
        return changes.waiting == 1

    await eventually(registered)
    await shop.deliver("payment.intent_created", order_id, intent_created(order_id))
    body = (await waiting).json()
    assert body["version"] > seen["version"] and body["state"] == "payment_pending"


async def test_status_reads_leave_the_timeline_out_only_when_asked(shop):
    order_id, headers = await guest_order(shop)
    full = await read(shop, order_id, headers)
    brief = await read(shop, order_id, headers, timeline="false")
    assert full.status_code == brief.status_code == 200
    assert [step["to"] for step in full.json()["timeline"]] == ["draft"]
    assert "timeline" not in brief.json()
    assert {k: v for k, v in full.json().items() if k != "timeline"} == brief.json()
    assert full.headers["ETag"] == brief.headers["ETag"] == f'"{brief.json()["version"]}"'


async def test_a_wait_or_timeout_out_of_range_is_refused_as_a_problem(shop):
    order_id, headers = await guest_order(shop)
    for params in (
        {"wait_for_change": -1},
        {"wait_for_change": "v3"},
        {"wait_for_change": 1, "timeout": 31},
        {"wait_for_change": 1, "timeout": 0},
        {"wait_for_change": 1, "timeout": "soon"},
        {"timeline": "maybe"},
    ):
        r = await read(shop, order_id, headers, **params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), params


async def test_a_wait_on_someone_elses_order_is_refused_like_a_missing_one(shop):
    order_id, _ = await guest_order(shop)
    changes = await listening(shop)
    r = await read(shop, order_id, {"X-Order-Token": "not-the-token"}, wait_for_change=1, timeout=30)
    assert r.status_code == 404
    r = await read(shop, str(uuid.uuid4()), {"X-Order-Token": "not-the-token"}, wait_for_change=1, timeout=30)
    assert r.status_code == 404
    assert changes.waiting == 0


async def test_the_payment_session_is_not_ready_until_the_order_has_a_payment_intent(shop):
    """The harness runs no payment service: the answer comes from the order's row alone."""
    order_id, headers = await guest_order(shop)
    version = (await read(shop, order_id, headers)).json()["version"]
    r = await shop.client.get(f"/v1/orders/{order_id}/payment-session", headers=headers)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("payment-not-ready")
    assert r.headers["Retry-After"] == "1"
    assert r.json()["version"] == version

    # with an intent, payment is asked as before (here unreachable)
    await shop.deliver("payment.intent_created", order_id, intent_created(order_id))
    r = await shop.client.get(f"/v1/orders/{order_id}/payment-session", headers=headers)
    assert r.status_code == 503 and r.json()["type"].endswith("payment-unavailable")


async def session(shop: Any, order_id: str, headers: dict[str, str], **params: Any) -> Any:
    return await shop.client.get(f"/v1/orders/{order_id}/payment-session", headers=headers, params=params)


async def test_a_payment_session_request_waits_through_the_reservation_until_the_intent_is_there(shop):
    """One request instead of a 409 and a long-poll per step: the stock reserved changes the order but brings
    no session, so the request keeps waiting; the intent's commit sends it on to payment (absent here: 503)."""
    order_id, headers = await guest_order(shop)
    changes = await listening(shop)
    placed = (await read(shop, order_id, headers)).json()["version"]
    waiting = asyncio.create_task(session(shop, order_id, headers, timeout=30))

    async def registered() -> bool:
        return changes.waiting == 1

    await eventually(registered)
    await shop.reserve(order_id)
    reserved = await shop.order(order_id)
    assert reserved["version"] > placed and reserved["state"] == "draft"  # payment asked, no intent yet
    # the reservation's commit wakes the request; it re-reads the order, finds no intent and waits on (a
    # request that answered on any change would be done by now)
    await asyncio.sleep(1.0)
    assert not waiting.done() and changes.waiting == 1

    await shop.deliver("payment.intent_created", order_id, intent_created(order_id))
    answer = await asyncio.wait_for(waiting, 20)
    assert answer.status_code == 503 and answer.json()["type"].endswith("payment-unavailable")
    assert changes.waiting == 0


async def test_a_payment_session_request_stops_waiting_when_the_order_can_no_longer_get_one(shop):
    """Cancelled while the customer waits for the session: the cancel's commit answers "not ready" with the
    cancelled order's version, instead of holding the request until its timeout."""
    order_id, headers = await guest_order(shop)
    changes = await listening(shop)
    waiting = asyncio.create_task(session(shop, order_id, headers, timeout=30))

    async def registered() -> bool:
        return changes.waiting == 1

    await eventually(registered)
    cancelled = await shop.client.post(f"/v1/orders/{order_id}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text

    # bounded well below the request's own 30 s, so a request still waiting for its timeout fails here
    answer = await asyncio.wait_for(waiting, 20)
    assert answer.status_code == 409 and answer.json()["type"].endswith("payment-not-ready")
    assert "cancelled" in answer.json()["detail"]
    assert answer.json()["version"] == (await read(shop, order_id, headers)).json()["version"]
    assert changes.waiting == 0


async def test_a_payment_session_wait_out_of_bounds_is_refused(shop):
    order_id, headers = await guest_order(shop)
    for timeout in ("0", "-1", "31", "soon"):
        r = await session(shop, order_id, headers, timeout=timeout)
        assert r.status_code == 422, (timeout, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


def test_waiters_past_the_bound_are_not_registered() -> None:
    changes = OrderChanges("postgresql://u:p@localhost/db", max_waiters=1)
    first, second = uuid.uuid4(), uuid.uuid4()
    with changes.watch(first) as one:
        assert one is not None
        with changes.watch(second) as two:
            assert two is None
            assert changes.waiting == 1
    assert changes.waiting == 0
    with changes.watch(second) as again:
        assert again is not None
