"""What the order service commits for order.events.v1 (its outbox, in commit order) is the order's timeline:
checkout, the saga's facts and staff's manual transitions alike, against real PostgreSQL in-process."""

from __future__ import annotations

from sqlalchemy import select

from handshake_order.db import messaging
from handshake_shared.envelope import parse_event


async def outbox_events(shop, order_id: str) -> list:
    ob = messaging.outbox
    async with shop.runtime.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ob.c.payload, ob.c.headers, ob.c.topic).where(ob.c.message_key == order_id).order_by(ob.c.id)
            )
        ).all()
    assert {r.topic for r in rows} == {"order.events.v1"}
    events = [parse_event(r.payload) for r in rows]
    for row, event in zip(rows, events, strict=True):
        assert row.headers == {
            "content-type": "application/cloudevents+json",
            **({"traceparent": event.traceparent} if event.traceparent else {}),
        }
    return events


async def test_staff_fulfilment_and_closing_are_announced_like_every_other_transition(shop):
    order_id = await shop.paid_order(key="ship-it")
    staff = shop.token("sam", "support")
    for to, reason in (("partially_fulfilled", "first parcel"), ("fulfilled", "second parcel"), ("closed", "done")):
        r = await shop.client.post(
            f"/v1/admin/orders/{order_id}/transitions", json={"to": to, "reason": reason}, headers=staff
        )
        assert r.status_code == 200, r.text

    events = await outbox_events(shop, order_id)
    announced = [
        (e.data["transition"]["from_state"], e.data["transition"]["to_state"], e.data["transition"]["reason"])
        for e in events
        if e.data.get("transition")
    ]
    timeline = (await shop.order(order_id))["timeline"]
    assert announced == [(s["from"], s["to"], s["reason"]) for s in timeline]
    assert [t for _, t, _ in announced] == [
        "draft",
        "payment_pending",
        "paid",
        "fulfillment_pending",
        "partially_fulfilled",
        "fulfilled",
        "closed",
    ]
    assert [e.type for e in events if e.data.get("transition")] == [
        f"order.{t}" if t != "draft" else "order.placed" for _, t, _ in announced
    ]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


async def test_a_declined_payment_is_announced(shop):
    order_id = (await shop.checkout(key="declined")).json()["order_id"]
    await shop.reserve_and_open_payment(order_id)
    await shop.deliver(
        "payment.failed",
        order_id,
        {"order_id": order_id, "attempt_id": "00000000-0000-4000-8000-0000000000a1", "failure_code": "card_declined"},
    )
    assert (await shop.order(order_id))["state"] == "payment_failed"
    (failed,) = [e for e in await outbox_events(shop, order_id) if e.type == "order.payment_failed"]
    assert failed.data["transition"] == {
        "from_state": "payment_pending",
        "to_state": "payment_failed",
        "reason": "payment failed: card_declined",
    }
