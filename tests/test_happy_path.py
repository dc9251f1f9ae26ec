"""A checkout travels from an HTTP request to a paid, stock-committed order purely through Kafka events
and per-service databases: four OS processes, real PostgreSQL, the real broker, the stripe SDK against
the emulator, and the emulator's own signed webhook."""

from __future__ import annotations

from collections import defaultdict

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat

from handshake_shared.envelope import CONTENT_TYPE, parse_event
from handshake_shared.events.topics import SAGA_TOPICS
from tests.kafka_log import read_topics


def succeeded_intents_for(shop, order_id: str) -> list:
    intents = shop.stripe.v1.payment_intents.list(params={"limit": 100})
    return [pi for pi in intents.auto_paging_iter() if pi.metadata.to_dict().get("order_id") == order_id]


def test_checkout_to_fulfillment_pending_through_events_only(shop, system):
    before = {sku: shop.stock(sku) for sku in ("HS-MUG", "HS-TEE")}

    result = shop.full_checkout(
        [{"sku": "HS-MUG", "quantity": 2}, {"sku": "HS-TEE", "quantity": 1}], coupon="WELCOME10"
    )
    order = result["order"]
    order_id = order["order_id"]

    assert order["state"] == "fulfillment_pending"
    # stock: available down by exactly the quantity, nothing left reserved, the units counted as sold
    for sku, qty in (("HS-MUG", 2), ("HS-TEE", 1)):
        after = shop.stock(sku)
        assert after["available"] == before[sku]["available"] - qty
        assert after["reserved"] == before[sku]["reserved"] == 0
        assert after["sold"] == before[sku]["sold"] + qty

    # money: exactly one PaymentIntent for the order, succeeded, for the snapshot total
    intents = succeeded_intents_for(shop, order_id)
    assert len(intents) == 1
    assert intents[0].status == "succeeded"
    assert intents[0].amount == order["total"] == order["snapshot"]["total"]
    assert intents[0].currency.upper() == order["currency"] == "EUR"
    assert intents[0].id == order["payment_intent_id"]

    # audit: one row per transition, in lifecycle order
    assert [(step["from"], step["to"]) for step in order["timeline"]] == [
        (None, "draft"),
        ("draft", "payment_pending"),
        ("payment_pending", "paid"),
        ("paid", "fulfillment_pending"),
    ]

    # contract: every message on the saga topics is a valid CloudEvent keyed by its order id, in structured
    # mode as the Kafka protocol binding defines it, so the CloudEvents SDK's auto-detection reads it as is
    records = read_topics(system.stack.broker.bootstrap_servers, list(SAGA_TOPICS))
    assert records, "nothing was published"
    for record in records:
        event = parse_event(record.value)
        assert record.key == event.subject.encode() == event.correlationid.encode()
        assert record.headers["content-type"] == CONTENT_TYPE.encode()
        # no ce_ headers (they mean binary mode) and no client-library headers of its own beside the body's; the
        # one header of ours marks an announcement staff sent again (the order admin's resend), never an attribute
        assert set(record.headers) <= {"content-type", "traceparent", "handshake-resend-of"}, record.headers
        read = ce_kafka.from_kafka(
            ce_kafka.KafkaMessage(headers=record.headers, key=record.key, value=record.value), JSONFormat()
        )
        assert (read.get_id(), read.get_type(), read.get_source()) == (str(event.id), event.type, event.source)
        assert read.get_extension("sequence") == f"{event.sequence:020d}"

    mine = [parse_event(r.value) for r in records if r.key == order_id.encode()]
    # each producing service numbers this order's events 1, 2, 3, ... in the order it emitted them
    sequences: dict[str, list[int]] = defaultdict(list)
    for event in sorted(mine, key=lambda e: e.time):
        sequences[event.source].append(event.sequence)
    assert set(sequences) == {
        "/handshake/order",
        "/handshake/inventory",
        "/handshake/payment",
        "/handshake/webhook-ingest",
    }
    for seen in sequences.values():
        assert seen == list(range(1, len(seen) + 1))
    types = [e.type for e in mine]
    for expected in (
        "order.placed",
        "inventory.reserved",
        "order.payment_requested",
        "payment.intent_created",
        "order.payment_pending",
        "provider.stripe.event",
        "payment.succeeded",
        "order.paid",
        "inventory.committed",
        "order.fulfillment_pending",
    ):
        assert types.count(expected) == 1, (expected, types)
    # causation links each reaction to the fact that caused it
    by_id = {str(e.id): e for e in mine}
    paid = next(e for e in mine if e.type == "order.paid")
    assert by_id[paid.causationid].type == "payment.succeeded"
    # no client secret ever travels on a topic
    assert not any(b"_secret_" in r.value for r in records)
