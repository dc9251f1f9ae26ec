"""The broker goes away while events are waiting in the outboxes: nothing is lost, nothing doubles, every
service stays ready (the outbox absorbs the outage) and the outbox's lag shows it.

On a system with a broker of its own: the embedded broker keeps nothing across a restart, which
must not disturb the other end-to-end tests. It also auto-creates a topic (with its own partition
count) for the first producer that asks, so the services are frozen while it restarts and only
thaw once the topics exist again, as they always would on a durable Kafka."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from handshake_devstack.storefront import Storefront
from handshake_devstack.system import wait_for
from tests.conftest import system_of_its_own


@pytest.fixture(scope="module")
def outage(stack) -> Iterator[Storefront]:
    with system_of_its_own(stack, "outage") as shop:
        yield shop


def metric(system, service: str, name: str) -> float:
    text = httpx.get(system.url(service) + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_events_pending_during_a_broker_outage_are_published_once_it_returns(outage):
    shop, system = outage, outage.system
    sku = "HS-CAP"
    before = shop.levels(sku)
    errors_before = metric(system, "order", "handshake_outbox_publish_errors_total")

    system.broker.stop()
    try:
        placed = shop.checkout([{"sku": sku, "quantity": 3}])  # accepted: only the order database is needed
        order_id, token = placed["order_id"], placed["lookup_token"]
        # the relay keeps failing and backing off; the order cannot move without the broker
        wait_for(lambda: metric(system, "order", "handshake_outbox_publish_errors_total") > errors_before, 30)
        # while every round fails, the lag gauges still say what waits: the alert is the outbox's age
        wait_for(lambda: metric(system, "order", "handshake_outbox_pending") >= 1, 30)
        age = wait_for(lambda: metric(system, "order", "handshake_outbox_oldest_pending_seconds"), 30)
        wait_for(lambda: metric(system, "order", "handshake_outbox_oldest_pending_seconds") > age, 30)
        assert shop.order(order_id, token)["state"] == "draft"
        assert shop.levels(sku) == before
        for service in ("order", "inventory", "payment", "webhook-ingest"):
            # no pod is taken out of rotation, let alone restarted, for an outage the outbox absorbs
            ready = httpx.get(system.url(service) + "/readyz")
            assert ready.status_code == 200, (service, ready.text)
            assert ready.json()["advisory"]["broker"].startswith("failed"), service
            assert httpx.get(system.url(service) + "/healthz").status_code == 200, service
    finally:
        system.freeze()
        try:
            system.broker.start()  # memory storage: topics are recreated empty
        finally:
            system.thaw()

    session = shop.payment_session(order_id, token, timeout=60)
    shop.pay(session["payment_intent_id"])
    order = shop.wait_for_state(order_id, token, {"fulfillment_pending"}, timeout=60)

    assert shop.levels(sku) == (before[0] - 3, 0, before[2] + 3)
    assert [step["to"] for step in order["timeline"]] == ["draft", "payment_pending", "paid", "fulfillment_pending"]
    assert [pi.status for pi in shop.intents_for(order_id)] == ["succeeded"]
    # every outbox drained again
    for service in ("order", "inventory", "payment", "webhook-ingest"):
        wait_for(lambda s=service: metric(system, s, "handshake_outbox_pending") == 0, 30)
