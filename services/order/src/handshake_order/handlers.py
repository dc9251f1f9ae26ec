"""The order service's handlers of inventory and payment events: each consumed fact locks the order, asks the
pure saga what follows (domain/saga.py) and applies it in the consumer's transaction (inbox + state + audit +
outbox). The saga's rules are in domain/saga.py; nothing here decides."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order import repository as repo
from handshake_order.db import refunds
from handshake_order.domain import saga
from handshake_order.domain.saga import Decision, OrderView
from handshake_order.domain.states import ORDER_LIFECYCLE
from handshake_order.domain.states import OrderState as S
from handshake_shared.consumer import Handler
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import inventory as inv
from handshake_shared.events import order as o
from handshake_shared.events import payment as pay
from handshake_shared.events.base import Payload
from handshake_shared.outbox import Outbox

log = structlog.get_logger("order")

ACTOR = "order-service"


class OrderEventHandlers:
    """The handlers the order's consumers of inventory.events.v1 and payment.events.v1 dispatch to."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def reacting(self, react: Callable[[OrderView, Any, CloudEvent], Decision]) -> Handler:
        async def handle(conn: AsyncConnection, event: CloudEvent, payload: Any) -> None:
            row = await repo.lock_order(conn, payload.order_id)
            if row is None:
                log.warning("event for an unknown order ignored", order_id=str(payload.order_id))
                return
            decision = react(repo.view_of(row), payload, event)
            await self.after(conn, decision, payload, event)
            await repo.apply(conn, self.outbox, decision, actor=ACTOR, cause=event)

        return handle

    async def after(self, conn: AsyncConnection, decision: Decision, payload: Any, event: CloudEvent) -> None:
        """Rows the saga's decision implies beyond the order itself (the refund ledger)."""
        for data in decision.emits:
            if isinstance(data, o.OrderRefundRequested):
                await repo.record_refund(
                    conn,
                    refund_id=data.refund_id,
                    order_id=data.order_id,
                    amount=data.amount,
                    currency=data.currency,
                    reason=data.reason,
                    restock=data.restock,
                    requested_by=data.requested_by,
                    requested_role=None,
                )

    async def on_refunded(self, conn: AsyncConnection, event: CloudEvent, p: pay.PaymentRefunded) -> None:
        row = await repo.lock_order(conn, p.order_id)
        if row is None:
            return
        refund = await _locked_refund(conn, p.refund_id)
        if refund is not None and refund.state == "succeeded":
            return
        decision = saga.on_refunded(
            repo.view_of(row), p, requested_here=refund is not None, restock=bool(refund and refund.restock)
        )
        if refund is not None:
            await _set_refund_state(conn, refund, "succeeded", provider_refund_id=p.provider_refund_id)
        await repo.apply(conn, self.outbox, decision, actor=ACTOR, cause=event)

    async def on_refund_failed(self, conn: AsyncConnection, event: CloudEvent, p: pay.PaymentRefundFailed) -> None:
        row = await repo.lock_order(conn, p.order_id)
        if row is None:
            return
        refund = await _locked_refund(conn, p.refund_id)
        if refund is None or refund.state != "requested":
            return
        await _set_refund_state(conn, refund, "failed")
        await repo.apply(conn, self.outbox, saga.on_refund_failed(repo.view_of(row), p), actor=ACTOR, cause=event)

    async def on_refund_reversed(self, conn: AsyncConnection, event: CloudEvent, p: pay.PaymentRefundReversed) -> None:
        row = await repo.lock_order(conn, p.order_id)
        if row is None:
            return
        refund = await _locked_refund(conn, p.refund_id)  # none for a refund made at the provider
        if refund is not None:
            if refund.state == "reversed":
                return
            await _set_refund_state(conn, refund, "reversed")
        await repo.apply(conn, self.outbox, saga.on_refund_reversed(repo.view_of(row), p), actor=ACTOR, cause=event)

    async def flag_dead_letter(self, conn: AsyncConnection, event: CloudEvent, error: str) -> None:
        """A payment fact we could not apply is money we cannot account for: a human must look."""
        # the subject, not the payload: the payload may be what could not be read
        row = await repo.lock_order(conn, event.subject) if repo.parse_order_id(event.subject) else None
        if row is None:
            return
        view = repo.view_of(row)
        decision = Decision(view)
        reason = f"{event.type} could not be applied and was dead-lettered"
        if ORDER_LIFECYCLE.can(view.state, S.NEEDS_REVIEW):
            decision.move(S.NEEDS_REVIEW, reason)
        decision.note("dead-letter", f"{reason}: {error[:300]}")
        await repo.apply(conn, self.outbox, decision, actor=ACTOR, cause=event)

    def inventory_handlers(self) -> dict[type[Payload], Handler]:
        return {
            inv.InventoryReserved: self.reacting(lambda v, p, e: saga.on_reserved(v, p, str(e.id))),
            inv.InventoryRejected: self.reacting(lambda v, p, e: saga.on_rejected(v, p)),
            inv.InventoryReservationExpired: self.reacting(lambda v, p, e: saga.on_reservation_expired(v, p)),
            inv.InventoryCommitted: self.reacting(lambda v, p, e: saga.on_committed(v, p)),
            inv.InventoryCommitFailed: self.reacting(lambda v, p, e: saga.on_commit_failed(v, p)),
        }

    def payment_handlers(self) -> dict[type[Payload], Handler]:
        return {
            pay.PaymentIntentCreated: self.reacting(lambda v, p, e: saga.on_intent_created(v, p)),
            pay.PaymentAuthorized: self.reacting(lambda v, p, e: saga.on_authorized(v, p)),
            pay.PaymentSucceeded: self.reacting(lambda v, p, e: saga.on_succeeded(v, p)),
            pay.PaymentFailed: self.reacting(lambda v, p, e: saga.on_failed(v, p)),
            pay.PaymentCanceled: self.reacting(lambda v, p, e: saga.on_canceled(v, p)),
            pay.PaymentCaptureFailed: self.reacting(lambda v, p, e: saga.on_capture_failed(v, p)),
            pay.PaymentMismatch: self.reacting(lambda v, p, e: saga.on_mismatch(v, p)),
            pay.PaymentDisputed: self.reacting(lambda v, p, e: saga.on_disputed(v, p)),
            pay.PaymentRefunded: self.on_refunded,
            pay.PaymentRefundFailed: self.on_refund_failed,
            pay.PaymentRefundReversed: self.on_refund_reversed,
        }


async def _locked_refund(conn: AsyncConnection, refund_id: uuid.UUID) -> Any:
    """The order's own refund row (asked for through the admin API), locked; None for any other id (payment's
    own refunds: an automatic one, or one made at the provider)."""
    return (await conn.execute(select(refunds).where(refunds.c.id == refund_id).with_for_update())).first()


async def _set_refund_state(conn: AsyncConnection, refund: Any, state: str, **columns: Any) -> None:
    await conn.execute(
        update(refunds).where(refunds.c.id == refund.id).values(state=state, updated_at=func.now(), **columns)
    )
