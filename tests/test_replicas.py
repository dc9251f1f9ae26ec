"""Two replicas of the order service, as a deployment scaled to two pods: one database, one consumer group, the
broker splitting the partitions between them, and the customer's requests reaching either."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from handshake_devstack.storefront import Storefront

ORDER_CONSUMERS = ("order.inventory-events", "order.payment-events")
LIFECYCLE = [
    (None, "draft"),
    ("draft", "payment_pending"),
    ("payment_pending", "paid"),
    ("paid", "fulfillment_pending"),
]


def applied(url: str) -> float:
    """Events the replica's order consumers applied since it started."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if (
                sample.name == "handshake_events_consumed_total"
                and sample.labels["consumer"] in ORDER_CONSUMERS
                and sample.labels["outcome"] == "applied"
            ):
                total += sample.value
    return total


def test_two_order_replicas_split_the_partitions_and_apply_every_order_change_once(system, shop):
    before = shop.stock("HS-CAP")
    first_before = applied(system.url("order"))
    system.scale("order", 2)
    try:
        # its requests alternate between the replicas: a long-poll often waits on the one not applying the change
        customer = Storefront(system)
        orders: list[dict] = []
        # the group rebalances once the second replica joins; until then the first holds every partition
        while len(orders) < 36:
            with ThreadPoolExecutor(6) as pool:
                done = pool.map(lambda _: customer.full_checkout([{"sku": "HS-CAP", "quantity": 1}]), range(6))
                orders += [d["order"] for d in done]
            first, second = (applied(url) for url in system.urls("order"))
            if first > first_before and second > 0:
                break
        assert first > first_before and second > 0, f"one replica applied everything: {first - first_before}, {second}"
    finally:
        system.scale("order", 1)

    # each order's changes applied once, whichever replica's partition it fell in
    for order in orders:
        assert order["state"] == "fulfillment_pending"
        assert [(step["from"], step["to"]) for step in order["timeline"]] == LIFECYCLE
    # and inventory committed each order's unit once: nothing held, nothing sold twice
    after = shop.stock("HS-CAP")
    assert after["sold"] == before["sold"] + len(orders)
    assert after["available"] == before["available"] - len(orders)
    assert after["reserved"] == before["reserved"]
