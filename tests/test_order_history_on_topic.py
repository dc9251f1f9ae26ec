"""order.events.v1 is each order's complete history: a subscriber that reads nothing but the topic rebuilds
every order's state and timeline, and they are the order service's own (GET /v1/admin/orders/{id}).

Orders of every kind: paid, cancelled by the customer, declined then paid, refunded in two steps,
fulfilled and closed by staff, flagged for review by staff. The topic is read twice, by independent
clients: the CloudEvents SDK's Kafka binding over a plain aiokafka reader, and the example subscriber
(examples/order-subscriber: confluent-kafka in a consumer group of its own, validating every message
against the committed JSON Schemas)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import defaultdict
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat

from handshake_devstack.storefront import DECLINED_CARD
from handshake_devstack.system import wait_for
from handshake_devstack.testing.fixtures import PROJECT_ROOT
from handshake_shared.events import ORDER_EVENTS
from tests.kafka_log import Record, read_topics

EXAMPLE = PROJECT_ROOT / "examples" / "order-subscriber" / "order_subscriber.py"

Step = tuple[str | None, str, str]


def staff_moves(shop, order_id: str, to: str, reason: str) -> None:
    r = shop.http.post(
        shop.system.url("order") + f"/v1/admin/orders/{order_id}/transitions",
        json={"to": to, "reason": reason},
        headers=shop.admin(),
    )
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def orders(shop) -> dict[str, str]:
    """name -> order id, each carried to its end state through the running system."""
    ids: dict[str, str] = {}

    ids["paid"] = shop.full_checkout([{"sku": "HS-MUG", "quantity": 1}])["placed"]["order_id"]

    placed = shop.checkout([{"sku": "HS-TEE", "quantity": 1}])
    shop.payment_session(placed["order_id"], placed["lookup_token"])
    assert shop.cancel(placed["order_id"], placed["lookup_token"]).status_code == 200
    shop.wait_for_state(placed["order_id"], placed["lookup_token"], {"cancelled"})
    ids["cancelled"] = placed["order_id"]

    placed = shop.checkout([{"sku": "HS-CAP", "quantity": 1}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    first = shop.payment_session(order_id, token)
    shop.pay(first["payment_intent_id"], card=DECLINED_CARD)
    shop.wait_for_state(order_id, token, {"payment_failed"})
    assert shop.new_payment_attempt(order_id, token).status_code == 202
    second = wait_for(
        lambda: (s := shop.payment_session(order_id, token))["payment_intent_id"] != first["payment_intent_id"] and s,
        30,
    )
    shop.pay(second["payment_intent_id"])
    shop.wait_for_state(order_id, token, {"fulfillment_pending"})
    ids["declined_then_paid"] = order_id

    done = shop.full_checkout([{"sku": "HS-MUG", "quantity": 2}])
    order_id, token, total = done["placed"]["order_id"], done["placed"]["lookup_token"], done["order"]["total"]
    assert shop.refund(order_id, 500, "one mug chipped").status_code == 202
    shop.wait_for_state(order_id, token, {"partially_refunded"})
    assert shop.refund(order_id, total - 500, "returned everything").status_code == 202
    shop.wait_for_state(order_id, token, {"refunded"})
    ids["refunded"] = order_id

    order_id = shop.full_checkout([{"sku": "HS-TEE", "quantity": 2}])["placed"]["order_id"]
    staff_moves(shop, order_id, "partially_fulfilled", "first parcel shipped")
    staff_moves(shop, order_id, "fulfilled", "second parcel shipped")
    staff_moves(shop, order_id, "closed", "delivered and past the return window")
    ids["fulfilled_and_closed"] = order_id

    order_id = shop.full_checkout([{"sku": "HS-CAP", "quantity": 1}])["placed"]["order_id"]
    staff_moves(shop, order_id, "needs_review", "address looks like a parcel forwarder")
    ids["flagged"] = order_id
    return ids


def timeline(shop, order_id: str) -> tuple[str, list[Step]]:
    order = shop.admin_order(order_id)
    return order["state"], [(s["from"], s["to"], s["reason"]) for s in order["timeline"]]


def read_with_the_sdk(records: list[Record]) -> tuple[dict[str, list[Step]], dict[str, list[int]]]:
    """Transitions and order-service sequence numbers per order, from the CloudEvents SDK's reading only."""
    steps: dict[str, list[Step]] = defaultdict(list)
    sequences: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for record in records:
        event = ce_kafka.from_kafka(
            ce_kafka.KafkaMessage(headers=record.headers, key=record.key, value=record.value), JSONFormat()
        )
        assert event.get_source() == "/handshake/order" and event.get_type().startswith("order.")
        if event.get_id() in seen:  # at least once: a redelivered event is the same event
            continue
        seen.add(event.get_id())
        order_id = event.get_subject()
        sequences[order_id].append(int(event.get_extension("sequence")))
        transition = event.get_data().get("transition")
        if transition:
            # named after the state it leads to; the order's creation is order.placed
            assert event.get_type() == (
                "order.placed" if transition["to_state"] == "draft" else f"order.{transition['to_state']}"
            )
            steps[order_id].append((transition["from_state"], transition["to_state"], transition["reason"]))
    return steps, sequences


def test_the_topic_alone_rebuilds_each_order_as_the_order_service_has_it(shop, system, orders):
    expected = {name: timeline(shop, order_id) for name, order_id in orders.items()}
    assert {name: state for name, (state, _) in expected.items()} == {
        "paid": "fulfillment_pending",
        "cancelled": "cancelled",
        "declined_then_paid": "fulfillment_pending",
        "refunded": "refunded",
        "fulfilled_and_closed": "closed",
        "flagged": "needs_review",
    }

    def read() -> Any:
        records = read_topics(system.broker.bootstrap_servers, [ORDER_EVENTS])
        steps, sequences = read_with_the_sdk(records)
        # the relay publishes just after each commit: wait until every transition can have arrived
        caught_up = all(len(steps[orders[n]]) >= len(expected[n][1]) for n in orders)
        return caught_up and (steps, sequences)

    steps, sequences = wait_for(read, 30)
    for name, order_id in orders.items():
        state, history = expected[name]
        assert steps[order_id] == history, name
        assert steps[order_id][-1][1] == state, name
        # in sequence and nothing missing: the order service numbered this order's events 1, 2, 3, ...
        assert sequences[order_id] == list(range(1, len(sequences[order_id]) + 1)), name


def test_the_example_subscriber_validates_every_event_and_agrees(shop, system, orders):
    expected = {order_id: timeline(shop, order_id) for order_id in orders.values()}
    # the first test waited for the topic to catch up when it runs first; this one must stand alone too
    wait_for(lambda: _caught_up(system, {oid: len(history) for oid, (_, history) in expected.items()}), 30)
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap-servers",
            system.broker.bootstrap_servers,
            "--group",
            f"example-team.{uuid.uuid4().hex[:8]}",
            "--to-end",
            "--config",
            "session.timeout.ms=6000",
            "--config",
            "fetch.wait.max.ms=50",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["invalid"] == []
    assert report["events"] > 0
    for order_id, (state, history) in expected.items():
        rebuilt = report["orders"][order_id]
        assert [tuple(step) for step in rebuilt["transitions"]] == history
        assert (rebuilt["state"], rebuilt["gaps"]) == (state, [])


def _caught_up(system, transitions: dict[str, int]) -> bool:
    steps, _ = read_with_the_sdk(read_topics(system.broker.bootstrap_servers, [ORDER_EVENTS]))
    return all(len(steps[order_id]) >= count for order_id, count in transitions.items())
