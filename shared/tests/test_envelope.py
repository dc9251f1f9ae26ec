import json
import uuid

import pytest

from handshake_shared.envelope import CONTENT_TYPE, EnvelopeError, build_event, parse_event
from handshake_shared.events.order import OrderPlaced


def placed(order_id: str = "6f1c0b7e-0000-4000-8000-000000000001", sequence: int = 1):  # type: ignore[no-untyped-def]
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
    assert doc["sequence"] == 1
    assert doc["traceparent"].startswith("00-0af7651916cd43dd")
    assert uuid.UUID(doc["id"])
    assert event.kafka_headers()["content-type"] == CONTENT_TYPE


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
        lambda d: d.update(unexpected="x"),
    ],
)
def test_invalid_envelopes_are_rejected(mutate):  # type: ignore[no-untyped-def]
    doc = json.loads(placed().to_bytes())
    mutate(doc)
    with pytest.raises(EnvelopeError):
        parse_event(json.dumps(doc))


def test_garbage_is_an_envelope_error_not_a_crash():
    with pytest.raises(EnvelopeError):
        parse_event(b"\xff\x00not json")
