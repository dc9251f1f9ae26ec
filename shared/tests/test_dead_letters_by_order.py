"""Staff looking at one order find its dead letters: those keyed by the order, and those whose message names it
under another key (a provider event keyed by its intent, a message that is not even an event). On the inventory
app in-process; messages are handed to its consumer directly."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from handshake_devstack.testing.fixtures import isolated_kafka_settings
from handshake_devstack.tokens import issue_token
from handshake_inventory.app import create_app
from handshake_inventory.settings import InventorySettings
from handshake_shared.consumer import RawMessage
from handshake_shared.envelope import build_event
from handshake_shared.events.order import OrderPlaced

GROUP = "inventory.order-events"
PATH = "/v1/admin/dead-letters"


@pytest.fixture
def settings(stack, fresh_database) -> InventorySettings:
    return InventorySettings(
        database_url=fresh_database("handshake_inventory"), consumer_max_attempts=1, **isolated_kafka_settings(stack)
    )


def bearer(settings: InventorySettings, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings, 'agent-7', list(roles))}"}


def placed(order_id: str, *, key: str, offset: int) -> RawMessage:
    event = build_event(
        service="order",
        type="order.placed",
        order_id=order_id,
        sequence=1,
        data={"order_id": order_id, "currency": "EUR", "total": 100, "lines": [{"sku": "SKU-1", "quantity": 1}]},
    )
    return RawMessage(topic="order.events.v1", partition=0, offset=offset, key=key.encode(), value=event.to_bytes())


async def test_an_orders_dead_letters_are_found_by_its_key_or_by_the_message_naming_it(settings) -> None:
    app = create_app(settings)
    consumer = next(c for c in app.state.runtime.consumers if c.name == GROUP)

    async def broken(conn, event, payload):
        raise RuntimeError("stock table locked")

    consumer.handlers[OrderPlaced] = broken
    ours, other = str(uuid.uuid4()), str(uuid.uuid4())
    messages = {
        "keyed": placed(ours, key=ours, offset=1),
        # keyed by something else, but the envelope and the data name the order
        "named": placed(ours, key="pi_123", offset=2),
        # not an event at all, yet it mentions the order
        "garbled": RawMessage(
            topic="order.events.v1",
            partition=0,
            offset=3,
            key=b"junk",
            value=json.dumps({"broken": True, "order": ours}).encode()[:-1],
        ),
        "other": placed(other, key=other, offset=4),
    }
    for msg in messages.values():
        assert await consumer.handle(msg) == "dead_lettered"

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            r = await client.get(PATH, params={"order_id": ours}, headers=bearer(settings, "support"))
            assert r.status_code == 200, r.text
            found = {item["offset"] for item in r.json()["items"]}
            assert found == {1, 2, 3}
            r = await client.get(PATH, params={"order_id": other, "status": "all"}, headers=bearer(settings, "finance"))
            assert [item["offset"] for item in r.json()["items"]] == [4]

            # every dead letter, unfiltered, stays for admins; the filter is a UUID
            assert (await client.get(PATH, headers=bearer(settings, "support"))).status_code == 403
            assert (await client.get(PATH, params={"order_id": ours})).status_code == 401
            bad = await client.get(PATH, params={"order_id": "x' OR 1=1"}, headers=bearer(settings, "admin"))
            assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    finally:
        await app.state.runtime.db.dispose()
