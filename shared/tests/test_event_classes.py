"""A payload class is its event: it carries its own type and topic, ids in it are UUIDs, and none of that
changes a byte of what is on the topics."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from handshake_devstack.testing.events import payload_on
from handshake_shared.consumer import handlers_by_class
from handshake_shared.envelope import build_event
from handshake_shared.events import EVENT_MODELS, TOPIC_OF
from handshake_shared.events import inventory as inv
from handshake_shared.events import order as o
from handshake_shared.events import payment as pay
from handshake_shared.events.base import Line
from handshake_shared.events.topics import INVENTORY_EVENTS, ORDER_EVENTS, PAYMENT_EVENTS, PROVIDER_EVENTS

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

ORDER = uuid.UUID("5b0e7c4a-1f2d-4e6b-9a8c-0d1e2f3a4b5c")
ATTEMPT = uuid.UUID("9c8b7a6f-5e4d-4c3b-8a29-180716253443")


async def nothing(conn, event, payload) -> None:
    return None


def test_every_event_class_names_its_own_type_and_the_topic_its_producer_publishes_on() -> None:
    producer_topic = {
        "order": ORDER_EVENTS,
        "inventory": INVENTORY_EVENTS,
        "payment": PAYMENT_EVENTS,
        "provider": PROVIDER_EVENTS,
    }
    for event_type, model in EVENT_MODELS.items():
        assert model.event_type == event_type
        assert model.event_topic == TOPIC_OF[event_type] == producer_topic[event_type.split(".", 1)[0]]


def test_an_id_is_a_uuid_in_the_payload_and_the_same_lowercase_string_on_the_wire() -> None:
    paid = o.OrderPaid(
        order_id=str(ORDER), attempt_id=str(ATTEMPT), payment_intent_id="pi_1", amount=3470, currency="EUR"
    )
    assert (paid.order_id, paid.attempt_id) == (ORDER, ATTEMPT)
    event = build_event(service="order", type=paid.event_type, order_id=str(ORDER), data=paid, sequence=1)
    data = json.loads(event.to_bytes())["data"]
    assert data == {
        "order_id": "5b0e7c4a-1f2d-4e6b-9a8c-0d1e2f3a4b5c",
        "transition": None,
        "attempt_id": "9c8b7a6f-5e4d-4c3b-8a29-180716253443",
        "payment_intent_id": "pi_1",
        "amount": 3470,
        "currency": "EUR",
    }
    # the same bytes whether the producer held the ids as UUIDs or as text
    from_uuids = o.OrderPaid(order_id=ORDER, attempt_id=ATTEMPT, payment_intent_id="pi_1", amount=3470, currency="EUR")
    assert from_uuids.model_dump_json() == paid.model_dump_json()


def test_optional_fields_stay_null_or_absent_as_before() -> None:
    failed = pay.PaymentFailed.model_validate({"order_id": str(ORDER), "attempt_id": str(ATTEMPT)})
    assert failed.model_dump(mode="json") == {
        "order_id": str(ORDER),
        "attempt_id": str(ATTEMPT),
        "payment_intent_id": None,
        "failure_code": None,
        "failure_message": None,
    }


def test_a_payload_whose_id_is_not_a_uuid_does_not_validate() -> None:
    with pytest.raises(ValidationError, match="reservation_id"):
        inv.InventoryReserved.model_validate(
            {
                "order_id": str(ORDER),
                "reservation_id": "r1",
                "expires_at": datetime.now(UTC).isoformat(),
                "lines": [Line(sku="MUG", quantity=1).model_dump()],
            }
        )


def test_a_handler_map_accepts_only_registered_event_classes() -> None:
    by_class = handlers_by_class({pay.PaymentAuthorized: nothing, pay.PaymentFailed: nothing})
    assert set(by_class) == {pay.PaymentAuthorized, pay.PaymentFailed}
    with pytest.raises(ValueError, match="OrderStateChanged"):
        handlers_by_class({o.OrderStateChanged: nothing})  # a base shared by several types is no event's class
    with pytest.raises(ValueError, match="TestPayload"):
        handlers_by_class({payload_on("order.events.v1", "order.nonexistent"): nothing})  # no registered type
