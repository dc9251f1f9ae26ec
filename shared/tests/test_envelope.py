import asyncio
import json
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat

from handshake_shared.envelope import CONTENT_TYPE, EnvelopeError, build_event, parse_event
from handshake_shared.events.order import OrderPlaced
from handshake_shared.kafka import ensure_topics, make_broker, relay_sender
from handshake_shared.settings import ServiceSettings


def placed(order_id: str = "6f1c0b7e-0000-4000-8000-000000000001", sequence: int = 1):
    return build_event(
        service="order",
        type="order.placed",
        order_id=order_id,
        data=OrderPlaced(order_id=order_id, currency="EUR", total=1000, lines=[{"sku": "A", "quantity": 1}]),
        sequence=sequence,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


def test_event_carries_cloudevents_attributes_and_extensions():
    event = placed()
    doc = json.loads(event.to_bytes())
    assert doc["specversion"] == "1.0"
    assert doc["source"] == "/handshake/order"
    assert doc["subject"] == doc["correlationid"] == "6f1c0b7e-0000-4000-8000-000000000001"
    assert doc["datacontenttype"] == "application/json"
    # the sequence extension is a String compared lexicographically: zero-padded, so that order is numeric order
    assert doc["sequence"] == "00000000000000000001"
    assert doc["traceparent"].startswith("00-0af7651916cd43dd")
    assert uuid.UUID(doc["id"])


def test_sequence_strings_sort_like_the_numbers_they_carry():
    numbers = [1, 2, 9, 10, 11, 99, 100, 12345678901234567890]
    wire = [json.loads(placed(sequence=n).to_bytes())["sequence"] for n in numbers]
    assert sorted(wire) == wire and len(set(map(len, wire))) == 1
    assert [parse_event(placed(sequence=n).to_bytes()).sequence for n in numbers] == numbers


def test_headers_are_structured_mode_only():
    # a ce_ header would make a binding reader treat the message as binary mode and miss the attributes
    assert placed().kafka_headers() == {
        "content-type": "application/cloudevents+json",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    assert CONTENT_TYPE == "application/cloudevents+json"


def test_the_cloudevents_sdk_reads_the_message_by_auto_detection():
    event = placed()
    message = ce_kafka.KafkaMessage(
        headers={k: v.encode() for k, v in event.kafka_headers().items()},
        key=event.subject.encode(),
        value=event.to_bytes(),
    )
    read = ce_kafka.from_kafka(message, JSONFormat())
    assert read.get_id() == str(event.id)
    assert read.get_source() == "/handshake/order"
    assert read.get_type() == "order.placed"
    assert read.get_subject() == event.subject
    assert read.get_extension("sequence") == "00000000000000000001"
    assert read.get_extension("correlationid") == event.correlationid
    assert read.get_data() == event.data


def test_events_from_before_the_string_sequence_still_parse():
    # still in the topics while a release rolls out, and in a replay from the beginning
    doc = json.loads(placed(sequence=42).to_bytes())
    doc["sequence"] = 42
    assert parse_event(json.dumps(doc)).sequence == 42


def test_round_trip_is_lossless():
    event = placed()
    assert parse_event(event.to_bytes()) == event


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("id"),
        lambda d: d.update(specversion="0.3"),
        lambda d: d.update(source="/elsewhere/x"),
        lambda d: d.update(sequence=0),
        lambda d: d.update(sequence="00000000000000000000"),
        lambda d: d.update(sequence="1e3"),
        lambda d: d.update(sequence=" 1"),
        lambda d: d.update(sequence="000000000000000000001"),
        lambda d: d.update(sequence=True),
        lambda d: d.update(unexpected="x"),
    ],
)
def test_invalid_envelopes_are_rejected(mutate):
    doc = json.loads(placed().to_bytes())
    mutate(doc)
    with pytest.raises(EnvelopeError):
        parse_event(json.dumps(doc))


def test_garbage_is_an_envelope_error_not_a_crash():
    with pytest.raises(EnvelopeError):
        parse_event(b"\xff\x00not json")


async def test_the_relay_puts_the_envelope_headers_on_the_message_and_nothing_of_its_own(stack):
    """What reaches the broker through the relay's FastStream producer: no correlation_id header of the
    client library's, a content-type that is the binding's, and a message the SDK reads by auto-detection."""
    bootstrap = stack.broker.bootstrap_servers
    topic = f"test.envelope.headers.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic], 1)
    event = placed()
    broker = make_broker(
        ServiceSettings(environment="test", kafka_bootstrap_servers=bootstrap, kafka_enable_idempotence=False),
        "test-envelope-headers",
    )
    async with broker:
        await broker.start()
        delivery = await relay_sender(broker)(topic, event.subject.encode(), event.to_bytes(), event.kafka_headers())
        await delivery
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    headers = dict(record.headers)
    assert headers == {"content-type": b"application/cloudevents+json", "traceparent": event.traceparent.encode()}
    read = ce_kafka.from_kafka(ce_kafka.KafkaMessage(headers=headers, key=record.key, value=record.value), JSONFormat())
    assert (read.get_id(), read.get_type(), read.get_extension("partitionkey")) == (
        str(event.id),
        event.type,
        event.subject,
    )
