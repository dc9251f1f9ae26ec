"""Orders that stopped moving are found: a draft is re-driven, a long payment_pending is flagged."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from handshake_devstack.testing.fixtures import isolated_kafka_settings
from handshake_order.db import messaging
from handshake_order.settings import OrderSettings

TOTAL = 2500 + 475 + 495


@pytest.fixture
def settings(stack, fresh_database) -> OrderSettings:
    return OrderSettings(
        database_url=fresh_database("handshake_order"),
        stuck_draft_after_seconds=0,
        stuck_payment_pending_after_seconds=0,
        stuck_paid_after_seconds=0,
        stuck_scan_interval_seconds=3600,
        **isolated_kafka_settings(stack),
    )


async def placed_count(shop, order_id: str) -> int:
    ob = messaging.outbox
    async with shop.runtime.db.engine.connect() as conn:
        stmt = select(func.count()).where(ob.c.event_type == "order.placed", ob.c.message_key == order_id)
        return int((await conn.execute(stmt)).scalar_one())


async def test_a_silent_draft_is_re_driven_once_and_a_waiting_payment_is_flagged(shop):
    draft = (await shop.checkout(key="d")).json()["order_id"]  # inventory never answers: nobody runs it here
    pending = (await shop.checkout(key="p")).json()["order_id"]
    await shop.reserve_and_open_payment(pending)

    paid = (await shop.checkout(key="m")).json()["order_id"]  # paid, then inventory never answered
    await shop.deliver(
        "inventory.reserved",
        paid,
        {
            "order_id": paid,
            "reservation_id": "00000000-0000-4000-8000-0000000000c2",
            "expires_at": "2030-01-01T00:00:00Z",
            "lines": [],
        },
    )
    await shop.deliver(
        "payment.intent_created",
        paid,
        {
            "order_id": paid,
            "attempt_id": "00000000-0000-4000-8000-0000000000a2",
            "payment_intent_id": "pi_2",
            "amount": TOTAL,
            "currency": "EUR",
        },
    )
    await shop.deliver(
        "payment.succeeded",
        paid,
        {
            "order_id": paid,
            "attempt_id": "00000000-0000-4000-8000-0000000000a2",
            "payment_intent_id": "pi_2",
            "amount": TOTAL,
            "currency": "eur",
        },
    )

    r = await shop.client.post("/v1/admin/stuck-orders/scan", headers=shop.token("ops", "support"))
    assert r.status_code == 200
    assert r.json()["stuck"] == {"draft": [draft], "payment_pending": [pending], "paid": [paid]}
    assert REGISTRY.get_sample_value("handshake_orders_stuck", {"state": "paid"}) == 1
    paid_note = (await shop.order(paid))["notes"]
    assert [n["kind"] for n in paid_note] == ["stuck"] and "inventory never answered" in paid_note[0]["detail"]
    assert REGISTRY.get_sample_value("handshake_orders_stuck", {"state": "draft"}) == 1
    assert REGISTRY.get_sample_value("handshake_orders_stuck", {"state": "payment_pending"}) == 1
    assert await placed_count(shop, draft) == 2  # the checkout's, and the re-drive

    await shop.app.state.scanner.scan_once()  # a second pass in the same window changes nothing
    assert await placed_count(shop, draft) == 2
    draft_view, pending_view = await shop.order(draft), await shop.order(pending)
    assert [n["kind"] for n in draft_view["notes"]] == ["redrive"]
    assert [n["kind"] for n in pending_view["notes"]] == ["stuck"]
    assert draft_view["state"] == "draft" and pending_view["state"] == "payment_pending"
    assert (await shop.client.post("/v1/admin/stuck-orders/scan", headers=shop.token("c"))).status_code == 403
