"""The broker goes away while events are waiting in the outboxes: nothing is lost, nothing doubles.

Runs after the happy path (file order): restarting the embedded broker empties every topic."""

from __future__ import annotations

import time

import httpx

from handshake_shared.devstack.system import wait_for


def metric(system, service: str, name: str) -> float:  # type: ignore[no-untyped-def]
    text = httpx.get(system.url(service) + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_events_pending_during_a_broker_outage_are_published_once_it_returns(shop, system):  # type: ignore[no-untyped-def]
    sku = "HS-CAP"
    before = shop.stock(sku)
    errors_before = metric(system, "order", "handshake_outbox_publish_errors_total")

    system.broker.stop()
    try:
        placed = shop.checkout([{"sku": sku, "quantity": 3}])  # accepted: only the order database is needed
        order_id, token = placed["order_id"], placed["lookup_token"]
        # the relay keeps failing and backing off; the order cannot move without the broker
        wait_for(lambda: metric(system, "order", "handshake_outbox_publish_errors_total") > errors_before, 30)
        time.sleep(1.0)
        assert shop.order(order_id, token)["state"] == "draft"
        assert shop.stock(sku) == before
    finally:
        system.broker.start()  # memory storage: topics are recreated empty

    session = shop.payment_session(order_id, token, timeout=60)
    shop.pay(session["payment_intent_id"])
    order = shop.wait_for_state(order_id, token, {"fulfillment_pending"}, timeout=60)

    after = shop.stock(sku)
    assert after["available"] == before["available"] - 3
    assert after["reserved"] == 0
    assert after["sold"] == before["sold"] + 3
    assert [step["to"] for step in order["timeline"]] == ["draft", "payment_pending", "paid", "fulfillment_pending"]
    intents = [
        pi
        for pi in shop.stripe.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
        if pi.metadata.to_dict().get("order_id") == order_id
    ]
    assert [pi.status for pi in intents] == ["succeeded"]
    # every outbox drained again
    for service in ("order", "inventory", "payment", "webhook-ingest"):
        wait_for(lambda s=service: metric(system, s, "handshake_outbox_pending") == 0, 30)
