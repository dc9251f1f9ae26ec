"""The order side of the saga: inventory and payment facts move the lifecycle; each handler runs in
the consumer's transaction (inbox row + state + audit + outbox commit together)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order import repository as repo
from handshake_order.domain.states import OrderState as S
from handshake_shared.consumer import Handler
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import ORDER_EVENTS
from handshake_shared.events import inventory as inv
from handshake_shared.events import order as o
from handshake_shared.events import payment as pay
from handshake_shared.outbox import Outbox

ACTOR = "order-service"


class OrderSaga:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def emit(self, conn: AsyncConnection, type: str, order_id: str, data: Any, cause: CloudEvent | None) -> None:
        await self.outbox.emit(conn, topic=ORDER_EVENTS, type=type, order_id=order_id, data=data, cause=cause)

    async def move(
        self, conn: AsyncConnection, order: Any, target: S, *, reason: str, cause: CloudEvent | None, actor: str = ACTOR,
        announce: str | None = None, **columns: Any,
    ) -> bool:
        """Transition and, if it applied, publish the matching order event (state-change payload)."""
        applied = await repo.transition(
            conn, order, target, reason=reason, actor=actor, event_id=str(cause.id) if cause else None, **columns
        )
        if applied and announce:
            await self.emit(
                conn, announce, str(order.id),
                o.OrderStateChanged(order_id=str(order.id), from_state=order.state, to_state=target, reason=reason),
                cause,
            )  # fmt: skip
        return applied

    # -- inventory.events.v1 ------------------------------------------------------------------

    async def on_reserved(self, conn: AsyncConnection, event: CloudEvent, p: inv.InventoryReserved) -> None:
        order = await repo.lock_order(conn, p.order_id)
        if order is None or order.state != S.DRAFT:
            return
        await conn.execute(
            repo.orders.update().where(repo.orders.c.id == order.id).values(reservation_id=p.reservation_id)
        )
        # one payment request per reservation: derived from the causing event, so a replay asks for the same one
        request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"payment-request:{event.id}"))
        await self.emit(
            conn, "order.payment_requested", p.order_id,
            o.OrderPaymentRequested(order_id=p.order_id, request_id=request_id, amount=order.total, currency=order.currency),
            event,
        )  # fmt: skip

    async def on_rejected(self, conn: AsyncConnection, event: CloudEvent, p: inv.InventoryRejected) -> None:
        order = await repo.lock_order(conn, p.order_id)
        if order is None:
            return
        skus = ", ".join(f"{line.sku} (wanted {line.requested}, {line.available} available)" for line in p.lines)
        await self.move(conn, order, S.CANCELLED, reason=f"out of stock: {skus}", cause=event, announce="order.cancelled")

    async def on_committed(self, conn: AsyncConnection, event: CloudEvent, p: inv.InventoryCommitted) -> None:
        order = await repo.lock_order(conn, p.order_id)
        if order is None:
            return
        if await self.move(conn, order, S.FULFILLMENT_PENDING, reason="stock committed", cause=event):
            await self.emit(
                conn, "order.fulfillment_pending", p.order_id, o.OrderFulfillmentPending(order_id=p.order_id), event
            )

    # -- payment.events.v1 --------------------------------------------------------------------

    async def on_intent_created(self, conn: AsyncConnection, event: CloudEvent, p: pay.PaymentIntentCreated) -> None:
        order = await repo.lock_order(conn, p.order_id)
        if order is None:
            return
        moved = await self.move(
            conn, order, S.PAYMENT_PENDING, reason="payment intent created", cause=event,
            payment_attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id,
        )  # fmt: skip
        if moved:
            await self.emit(
                conn, "order.payment_pending", p.order_id,
                o.OrderPaymentPending(order_id=p.order_id, attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id),
                event,
            )  # fmt: skip

    async def on_payment_succeeded(self, conn: AsyncConnection, event: CloudEvent, p: pay.PaymentSucceeded) -> None:
        order = await repo.lock_order(conn, p.order_id)
        if order is None:
            return
        if p.amount != order.total or p.currency.upper() != order.currency:
            # never fulfil an order whose charge does not match its snapshot
            await self.move(
                conn, order, S.NEEDS_REVIEW, cause=event, announce="order.needs_review",
                reason=f"charged {p.amount} {p.currency.upper()} but the order total is {order.total} {order.currency}",
            )  # fmt: skip
            return
        moved = await self.move(
            conn, order, S.PAID, reason="payment succeeded", cause=event,
            payment_attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id,
        )  # fmt: skip
        if moved:
            await self.emit(
                conn, "order.paid", p.order_id,
                o.OrderPaid(order_id=p.order_id, attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id,
                            amount=p.amount, currency=p.currency.upper()),
                event,
            )  # fmt: skip

    async def on_payment_failed(self, conn: AsyncConnection, event: CloudEvent, p: pay.PaymentFailed) -> None:
        order = await repo.lock_order(conn, p.order_id)
        if order is None or order.payment_attempt_id not in (None, p.attempt_id):
            return  # a stale attempt's failure says nothing about the current one
        reason = f"payment failed: {p.failure_code or 'unknown'}"
        await self.move(conn, order, S.PAYMENT_FAILED, reason=reason, cause=event)

    def inventory_handlers(self) -> dict[str, Handler]:
        return {
            "inventory.reserved": self.on_reserved,
            "inventory.rejected": self.on_rejected,
            "inventory.committed": self.on_committed,
        }

    def payment_handlers(self) -> dict[str, Handler]:
        return {
            "payment.intent_created": self.on_intent_created,
            "payment.succeeded": self.on_payment_succeeded,
            "payment.failed": self.on_payment_failed,
        }
