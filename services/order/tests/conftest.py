"""Order service under test: the real app in-process on real PostgreSQL and the real broker."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from handshake_devstack.testing.fixtures import isolated_kafka_settings, serve_in_process
from handshake_devstack.tokens import issue_token
from handshake_order.app import create_app
from handshake_order.settings import OrderSettings
from handshake_shared.consumer import EventConsumer, RawMessage
from handshake_shared.envelope import build_event

CATALOGUE: dict[str, Any] = {
    "reason": "test catalogue",
    "products": [
        {"sku": "MUG", "name": "Mug", "unit_price": 1250, "currency": "EUR"},
        {"sku": "TEE", "name": "T-shirt", "unit_price": 2000, "currency": "EUR"},
    ],
    "tax_rates": [{"region": "DE", "rate_bp": 1900}],
    "shipping_rates": [{"code": "standard", "amount": 495, "currency": "EUR"}],
    "coupons": [
        {"code": "TENOFF", "kind": "percent", "percent_bp": 1000},
        {"code": "FIVE-ONLY", "kind": "fixed", "amount_off": 500, "currency": "EUR", "max_redemptions": 5},
        {"code": "ONCE", "kind": "percent", "percent_bp": 500, "once_per_customer": True},
    ],
}
MUG_ORDER = {"lines": [{"sku": "MUG", "quantity": 2}], "region": "DE", "shipping_method": "standard"}
MUG_TOTAL = 2500 + 475 + 495  # 2 x 1250, 19 % tax, shipping
# the secret one guest browser keeps; a guest checkout needs one
GUEST_SESSION = "browser-one-Zm9vYmFyYmF6cXV4"


@pytest.fixture
def settings(stack, fresh_database) -> OrderSettings:
    return OrderSettings(
        database_url=fresh_database("handshake_order"), support_refund_limit=1000, **isolated_kafka_settings(stack)
    )


class OrderHarness:
    def __init__(self, app: Any, client: httpx.AsyncClient, settings: OrderSettings) -> None:
        self.app = app
        self.client = client
        self.settings = settings
        self.guest_session = GUEST_SESSION
        self.runtime = app.state.runtime
        self._seq = itertools.count(1)

    def token(self, subject: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.settings, subject, list(roles))}"}

    def consumer(self, name: str) -> EventConsumer:
        return next(c for c in self.runtime.consumers if c.name == name)

    async def deliver(self, type_: str, order_id: str, data: dict[str, Any], *, topic: str | None = None) -> str:
        """A fact from another service, through the real consumer (inbox, retries, dead letters)."""
        service = type_.split(".")[0]
        event = build_event(service=service, type=type_, order_id=order_id, data=data, sequence=next(self._seq))
        group = {"inventory": "order.inventory-events", "payment": "order.payment-events"}[service]
        return await self.consumer(group).handle(
            RawMessage(
                topic=topic or f"{service}.events.v1",
                partition=0,
                offset=0,
                key=order_id.encode(),
                value=event.to_bytes(),
            )
        )

    async def checkout(self, body: dict[str, Any] = MUG_ORDER, key: str = "k", **headers: str) -> httpx.Response:
        """As a signed-in customer when given an Authorization header, otherwise as the guest browser GUEST_SESSION."""
        if "Authorization" not in headers:
            headers.setdefault("Guest-Session", GUEST_SESSION)
        return await self.client.post("/v1/checkout", json=body, headers={"Idempotency-Key": key, **headers})

    @staticmethod
    def from_address(address: str) -> dict[str, str]:
        """Headers of a request the gateway (one trusted hop) forwarded for this client address."""
        return {"X-Forwarded-For": address}

    async def held(self) -> tuple[int, int]:
        """Orders stored and order.placed events queued: what checkouts hold (a refused one adds nothing)."""
        async with self.runtime.db.engine.connect() as conn:
            orders = (await conn.execute(text("SELECT count(*) FROM orders"))).scalar_one()
            placed = (
                await conn.execute(text("SELECT count(*) FROM outbox WHERE event_type = 'order.placed'"))
            ).scalar_one()
        return orders, placed

    async def order(self, order_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/admin/orders/{order_id}", headers=self.token("ops", "support"))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def reserve(self, order_id: str) -> None:
        """The fact that a fresh order's stock is reserved (the order then asks payment for an attempt)."""
        await self.deliver(
            "inventory.reserved",
            order_id,
            {
                "order_id": order_id,
                "reservation_id": "00000000-0000-4000-8000-0000000000c1",
                "expires_at": "2030-01-01T00:00:00Z",
                "lines": [],
            },
        )

    async def reserve_and_open_payment(self, order_id: str) -> None:
        """The facts that carry a fresh order to payment_pending: its stock reserved, its intent created."""
        await self.reserve(order_id)
        await self.deliver(
            "payment.intent_created",
            order_id,
            {
                "order_id": order_id,
                "attempt_id": "00000000-0000-4000-8000-0000000000a1",
                "payment_intent_id": "pi_1",
                "amount": MUG_TOTAL,
                "currency": "EUR",
            },
        )

    async def paid_order(self, key: str = "paid") -> str:
        """An order carried to fulfillment_pending by the facts inventory and payment would send."""
        r = await self.checkout(key=key)
        order_id = r.json()["order_id"]
        await self.reserve_and_open_payment(order_id)
        await self.deliver(
            "payment.succeeded",
            order_id,
            {
                "order_id": order_id,
                "attempt_id": "00000000-0000-4000-8000-0000000000a1",
                "payment_intent_id": "pi_1",
                "amount": MUG_TOTAL,
                "currency": "eur",
            },
        )
        await self.deliver(
            "inventory.committed",
            order_id,
            {"order_id": order_id, "reservation_id": "00000000-0000-4000-8000-0000000000c1"},
        )
        assert (await self.order(order_id))["state"] == "fulfillment_pending"
        return order_id


@pytest.fixture
async def shop(settings: OrderSettings) -> AsyncIterator[OrderHarness]:
    app = create_app(settings)
    async with serve_in_process(app) as client:
        harness = OrderHarness(app, client, settings)
        r = await client.put("/v1/admin/catalogue", json=CATALOGUE, headers=harness.token("ops", "admin"))
        assert r.status_code == 200, r.text
        yield harness
