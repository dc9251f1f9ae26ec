"""Inventory test wiring: settings on a fresh migrated database, and a harness that delivers order
events through the real inbox consumer (no broker) and reads back stock, ledger and outbox."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Row

from handshake_inventory import SERVICE
from handshake_inventory import repository as repo
from handshake_inventory.db import messaging, reservations, stock_items, stock_movements
from handshake_inventory.handlers import InventoryEventHandlers
from handshake_inventory.settings import InventorySettings
from handshake_inventory.sweeper import ReservationSweeper
from handshake_shared.consumer import EventConsumer, RawMessage, RetryPolicy
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent, build_event
from handshake_shared.events import ORDER_EVENTS
from handshake_shared.outbox import Outbox


@pytest.fixture
def settings(stack, fresh_database) -> InventorySettings:
    return InventorySettings(
        database_url=fresh_database("handshake_inventory"),
        kafka_bootstrap_servers=stack.broker.bootstrap_servers,
        kafka_enable_idempotence=False,
        kafka_client_id_suffix="-" + uuid.uuid4().hex[:6],
        outbox_idle_poll_seconds=0.1,
        reservation_ttl_seconds=600,
        db_pool_size=16,
    )


def order_event(type: str, order_id: str, data: dict[str, Any], sequence: int = 1) -> CloudEvent:
    return build_event(service="order", type=type, order_id=order_id, data=data, sequence=sequence)


def placed(order_id: str, *lines: tuple[str, int]) -> CloudEvent:
    data = {
        "order_id": order_id,
        "currency": "EUR",
        "total": 1000,
        "lines": [{"sku": s, "quantity": q} for s, q in lines],
    }
    return order_event("order.placed", order_id, data)


def paid(order_id: str) -> CloudEvent:
    return order_event(
        "order.paid",
        order_id,
        {
            "order_id": order_id,
            "attempt_id": "00000000-0000-4000-8000-0000000000a1",
            "payment_intent_id": "pi_1",
            "amount": 1000,
            "currency": "EUR",
        },
        sequence=3,
    )


def authorized(order_id: str) -> CloudEvent:
    return order_event(
        "order.payment_authorized",
        order_id,
        {
            "order_id": order_id,
            "attempt_id": "00000000-0000-4000-8000-0000000000a1",
            "payment_intent_id": "pi_1",
            "amount": 1000,
            "currency": "EUR",
        },
        sequence=3,
    )


def refunded(order_id: str, refund_id: str, *, restock: bool, partial: bool = False) -> CloudEvent:
    data = {
        "order_id": order_id,
        "refund_id": refund_id,
        "amount": 400,
        "currency": "EUR",
        "refunded_total": 400,
        "restock": restock,
    }
    return order_event("order.partially_refunded" if partial else "order.refunded", order_id, data, sequence=5)


def state_changed(type: str, order_id: str, to_state: str, reason: str = "test") -> CloudEvent:
    data = {"order_id": order_id, "from_state": "payment_pending", "to_state": to_state, "reason": reason}
    return order_event(type, order_id, data, sequence=3)


@dataclass
class Inventory:
    db: Database
    handlers: InventoryEventHandlers
    consumer: EventConsumer

    # event builders, for tests that deliver an event themselves (races, the broker)
    events = SimpleNamespace(
        placed=placed,
        paid=paid,
        authorized=authorized,
        refunded=refunded,
        state_changed=state_changed,
        order_event=order_event,
    )

    async def deliver(self, event: CloudEvent) -> str:
        """Through the consumer the app uses: inbox dedup, payload validation, one transaction."""
        return await self.consumer.handle(
            RawMessage(topic=ORDER_EVENTS, partition=0, offset=None, key=event.subject.encode(), value=event.to_bytes())
        )

    async def applied(self, event: CloudEvent) -> CloudEvent:
        outcome = await self.deliver(event)
        assert outcome == "applied", f"{event.type} was {outcome}"
        return event

    async def place(self, order_id: str, *lines: tuple[str, int]) -> CloudEvent:
        return await self.applied(placed(order_id, *lines))

    async def pay(self, order_id: str) -> CloudEvent:
        return await self.applied(paid(order_id))

    async def authorize(self, order_id: str) -> CloudEvent:
        return await self.applied(authorized(order_id))

    async def cancel(self, order_id: str, reason: str = "test") -> CloudEvent:
        return await self.applied(state_changed("order.cancelled", order_id, "cancelled", reason))

    async def refund(self, order_id: str, refund_id: str, *, restock: bool, partial: bool = False) -> CloudEvent:
        return await self.applied(refunded(order_id, refund_id, restock=restock, partial=partial))

    async def overdue(self, *order_ids: str) -> None:
        """Move these reservations' expiry into the past (instead of waiting out the TTL)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                update(reservations)
                .where(reservations.c.order_id.in_(order_ids))
                .values(expires_at=func.now() - text("interval '1 second'"))
            )

    def sweeper(self, batch_size: int = 100) -> ReservationSweeper:
        return ReservationSweeper(self.db, self.handlers, batch_size=batch_size, interval_seconds=0.05)

    async def sweep(self) -> int:
        return await self.sweeper().sweep_once()

    async def reservation(self, order_id: str) -> Row[Any]:
        async with self.db.engine.connect() as conn:
            row = await repo.find_reservation(conn, order_id)
        assert row is not None, f"no reservation for {order_id}"
        return row

    async def history(self, order_id: str) -> list[tuple[str | None, str]]:
        """The reservation's recorded transitions, oldest first."""
        async with self.db.engine.connect() as conn:
            rows = await repo.history_of(conn, (await self.reservation(order_id)).id)
        return [(r.from_state, r.to_state) for r in rows]

    async def movements(self, order_id: str) -> list[tuple[str, str, int]]:
        """The ledger rows of one order: (kind, sku, units), oldest first."""
        async with self.db.engine.connect() as conn:
            rows = await repo.movements_of_order(conn, order_id)
        return [(m.kind, m.sku, max(abs(m.delta_available), abs(m.delta_reserved), abs(m.delta_sold))) for m in rows]

    async def expire(self, order_id: str) -> CloudEvent:
        return await self.applied(state_changed("order.expired", order_id, "expired"))

    async def set_stock(self, sku: str, available: int) -> None:
        async with self.db.transaction() as conn:
            await repo.set_available(conn, sku, available, reason="test stock", actor="test")

    async def stock(self, sku: str) -> tuple[int, int, int]:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(stock_items).where(stock_items.c.sku == sku))).one()
        return row.available, row.reserved, row.sold

    async def ledger(self, sku: str) -> tuple[int, int, int]:
        """What the audit ledger says the stock is: the sums of every movement."""
        m = stock_movements.c
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.sum(m.delta_available), func.sum(m.delta_reserved), func.sum(m.delta_sold)).where(
                        m.sku == sku
                    )
                )
            ).one()
        return tuple(int(v or 0) for v in row)

    async def emitted(self, order_id: str | None = None) -> list[CloudEvent]:
        """Events this service committed to its outbox, in outbox order."""
        ob = messaging.outbox
        query = select(ob.c.payload).order_by(ob.c.id)
        if order_id is not None:
            query = query.where(ob.c.message_key == order_id)
        async with self.db.engine.connect() as conn:
            payloads = (await conn.execute(query)).scalars().all()
        return [CloudEvent.model_validate(json.loads(p)) for p in payloads]


@pytest.fixture
async def inventory(settings: InventorySettings) -> AsyncIterator[Inventory]:
    db = Database(settings.database_url.get_secret_value(), pool_size=settings.db_pool_size)
    outbox = Outbox(messaging, SERVICE)
    handlers = InventoryEventHandlers(outbox, settings)
    consumer = EventConsumer(
        name="inventory.order-events",
        db=db,
        tables=messaging,
        outbox=outbox,
        handlers=handlers.order_handlers(),
        policy=RetryPolicy(max_attempts=1),
    )
    yield Inventory(db, handlers, consumer)
    await db.dispose()
