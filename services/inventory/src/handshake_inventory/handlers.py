"""Inventory's handlers of order events: order facts reserve, commit, release and restock stock. Each handler
runs in the consumer's transaction, so the inbox row, stock changes, ledger rows, reservation (and its
history row) and outbox rows commit together or not at all. The expiry sweeper calls `expire` in its
own transaction with the same guarantees.

Lock order, the same on every path so no two writers wait on each other: the reservation row, then
stock rows in SKU order, then the order's outbox sequence row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_inventory import metrics
from handshake_inventory import repository as repo
from handshake_inventory.domain.reservations import LAPSED, MOVEMENTS, RESERVATION_LIFECYCLE, hold_seconds
from handshake_inventory.domain.reservations import ReservationState as R
from handshake_inventory.domain.stock import MovementKind, Shortage, merge_lines, shortages
from handshake_inventory.settings import InventorySettings
from handshake_shared.consumer import Handler, PoisonMessage
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import inventory as inv
from handshake_shared.events import order as o
from handshake_shared.events.base import Line, Payload
from handshake_shared.outbox import Outbox

log = structlog.get_logger("inventory")

ACTOR = "inventory-service"
SWEEPER_ACTOR = "inventory-expiry-sweeper"


def _event_id(cause: CloudEvent | None) -> str | None:
    return str(cause.id) if cause else None


def _reserved(order_id: str, reservation: Row[Any], lines: dict[str, int]) -> inv.InventoryReserved:
    """The answer to a placement: the reservation, until when it holds, and every line it holds."""
    return inv.InventoryReserved(
        order_id=order_id,
        reservation_id=reservation.id,
        expires_at=reservation.expires_at,
        lines=[Line(sku=sku, quantity=q) for sku, q in lines.items()],
    )


class InventoryEventHandlers:
    """What the consumer of order.events.v1 dispatches to, and the stock operations behind it (the expiry
    sweeper calls `expire`)."""

    def __init__(self, outbox: Outbox, settings: InventorySettings) -> None:
        self.outbox = outbox
        self.ttl_seconds = settings.reservation_ttl_seconds

    async def emit(self, conn: AsyncConnection, payload: inv.InventoryEvent, cause: CloudEvent | None) -> None:
        await self.outbox.emit(conn, payload, order_id=payload.order_id, cause=cause)

    async def _step(
        self,
        conn: AsyncConnection,
        reservation: Row[Any],
        lines: dict[str, int],
        target: R,
        *,
        reason: str,
        actor: str = ACTOR,
        cause: CloudEvent | None,
    ) -> None:
        """Move the reservation to `target`: the transition's stock movements for every line (SKU
        order, the one lock order every writer uses), its ledger rows, and its history row."""
        current = R(reservation.state)
        RESERVATION_LIFECYCLE.check(current, target)
        for kind in MOVEMENTS[(current, target)]:
            for sku, quantity in lines.items():
                await repo.move(
                    conn,
                    sku,
                    kind,
                    quantity,
                    reason=reason,
                    actor=actor,
                    order_id=reservation.order_id,
                    event_id=_event_id(cause),
                )
                metrics.UNITS_MOVED.labels(kind).inc(quantity)
        await repo.transition(conn, reservation, target, reason=reason, actor=actor, event_id=_event_id(cause))

    # -- stock operations -----------------------------------------------------------------------

    async def reserve(
        self,
        conn: AsyncConnection,
        order_id: str,
        lines: Iterable[tuple[str, int]],
        cause: CloudEvent | None,
        *,
        hold: int | None = None,
    ) -> str:
        """Hold every line or none, for `hold` seconds (capped by the TTL setting). Rows are locked in SKU
        order, the whole order is checked against the locked figures, and only then moved with conditional
        updates: a rejection changes nothing."""
        await repo.lock_order(conn, order_id)
        existing = await repo.find_reservation(conn, order_id)
        if existing is not None:
            # a placement sent again (the order re-drives a draft that never heard back) gets the
            # answer it missed; nothing is reserved twice
            if existing.state == R.HELD:
                held = await repo.lines_of(conn, existing.id)
                await self.emit(conn, _reserved(order_id, existing, held), cause)
            log.info("order already has a reservation", order_id=order_id, state=existing.state)
            return "duplicate"
        requested = merge_lines(lines)
        short = shortages(requested, await repo.lock_stock(conn, requested))
        if short:
            rejected = [_rejected_line(s) for s in short]
            await self.emit(conn, inv.InventoryRejected(order_id=order_id, lines=rejected), cause)
            metrics.RESERVATIONS.labels("rejected").inc()
            for s in short:
                metrics.REJECTED_LINES.labels(s.reason).inc()
            log.info("reservation rejected", order_id=order_id, short=[s.sku for s in short])
            return "rejected"
        for sku, quantity in requested.items():
            await repo.move(
                conn,
                sku,
                MovementKind.RESERVE,
                quantity,
                reason="order placed",
                actor=ACTOR,
                order_id=order_id,
                event_id=_event_id(cause),
            )
            metrics.UNITS_MOVED.labels(MovementKind.RESERVE).inc(quantity)
        reservation = await repo.create_reservation(
            conn,
            order_id,
            requested,
            ttl_seconds=hold_seconds(hold, self.ttl_seconds),
            reason="order placed",
            actor=ACTOR,
            event_id=_event_id(cause),
        )
        await self.emit(conn, _reserved(order_id, reservation, requested), cause)
        metrics.RESERVATIONS.labels("reserved").inc()
        return "reserved"

    async def lengthen_hold(self, conn: AsyncConnection, order_id: str, asked: int) -> str:
        """The customer opened the payment session: a held reservation now holds for the full checkout time
        from its creation. Anything else (sold, released, expired, never made) holds nothing to lengthen:
        a hold that lapsed first stays lapsed, and a payment arriving later is handled as any late payment."""
        reservation = await repo.find_reservation(conn, order_id, lock=True)
        if reservation is None or reservation.state != R.HELD:
            log.info(
                "no held reservation to lengthen", order_id=order_id, state=reservation.state if reservation else None
            )
            return "noop"
        expires_at = await repo.lengthen_hold(conn, reservation.id, hold_seconds(asked, self.ttl_seconds))
        metrics.HOLDS_EXTENDED.inc()
        log.info("hold lengthened", order_id=order_id, expires_at=expires_at.isoformat())
        return "lengthened"

    async def commit(
        self, conn: AsyncConnection, order_id: str, cause: CloudEvent | None, *, trigger: str = "order paid"
    ) -> str:
        """Sell the order's reservation, once. A held one (even past expires_at, if no sweeper got to
        it) sells its reserved units. One whose hold lapsed (released, expired, restocked) is
        reserved again from available stock, all lines or none, and sold at once: money is truth,
        but units that are not there are never sold; then the answer is inventory.commit_failed."""
        reservation = await repo.find_reservation(conn, order_id, lock=True)
        if reservation is None:
            await self._commit_failed(conn, order_id, "reservation_missing", [], cause)
            return "commit_failed"
        state = R(reservation.state)
        if state == R.COMMITTED:
            log.info("reservation already committed", order_id=order_id, trigger=trigger)
            return "duplicate"
        lines = await repo.lines_of(conn, reservation.id)
        rereserved = state in LAPSED
        if rereserved:
            # lock and check every line before moving any: a shortfall changes nothing
            short = shortages(lines, await repo.lock_stock(conn, lines))
            if short:
                rejected = [_rejected_line(s) for s in short]
                await self._commit_failed(conn, order_id, "insufficient_stock", rejected, cause)
                return "commit_failed"
        reason = f"{trigger}: re-reserved, the reservation was {state}" if rereserved else trigger
        await self._step(conn, reservation, lines, R.COMMITTED, reason=reason, cause=cause)
        await self.emit(
            conn, inv.InventoryCommitted(order_id=order_id, reservation_id=reservation.id, rereserved=rereserved), cause
        )
        outcome = "rereserved" if rereserved else "committed"
        metrics.RESERVATIONS.labels(outcome).inc()
        return outcome

    async def cancel(self, conn: AsyncConnection, order_id: str, reason: str, cause: CloudEvent | None) -> str:
        """The order was cancelled: a held reservation is released (inventory.released keeps its
        reason code, order_cancelled); a committed one, whose capture failed after the stock was sold,
        is restocked with the order's own reason. Anything else holds nothing and is left as it is."""
        reservation = await repo.find_reservation(conn, order_id, lock=True)
        if reservation is not None and reservation.state == R.COMMITTED:
            return await self._restock(conn, reservation, reason, cause)
        return await self._release(conn, order_id, reservation, "order_cancelled", cause)

    async def release(self, conn: AsyncConnection, order_id: str, reason: str, cause: CloudEvent | None) -> str:
        reservation = await repo.find_reservation(conn, order_id, lock=True)
        return await self._release(conn, order_id, reservation, reason, cause)

    async def restock(self, conn: AsyncConnection, order_id: str, reason: str, cause: CloudEvent | None) -> str:
        """Return a committed reservation's sold units to available, once. Only a committed
        reservation has sold units of this order; every other state leaves stock as it is."""
        reservation = await repo.find_reservation(conn, order_id, lock=True)
        if reservation is None or reservation.state != R.COMMITTED:
            log.info("nothing sold to restock", order_id=order_id, state=reservation.state if reservation else None)
            return "noop"
        return await self._restock(conn, reservation, reason, cause)

    async def expire(self, conn: AsyncConnection, reservation: Row[Any]) -> None:
        """The sweeper found this held reservation past expires_at and holds its row lock."""
        lines = await repo.lines_of(conn, reservation.id)
        await self._step(
            conn, reservation, lines, R.EXPIRED, reason="reservation expired", actor=SWEEPER_ACTOR, cause=None
        )
        await self.emit(
            conn,
            inv.InventoryReservationExpired(
                order_id=reservation.order_id, reservation_id=reservation.id, reason="expired"
            ),
            None,
        )
        metrics.RESERVATIONS.labels("expired").inc()

    async def _release(
        self, conn: AsyncConnection, order_id: str, reservation: Row[Any] | None, reason: str, cause: CloudEvent | None
    ) -> str:
        """Return a held reservation's units to available. A missing (rejected order), committed
        (sold) or already released or expired reservation is left as it is."""
        if reservation is None or not RESERVATION_LIFECYCLE.can(R(reservation.state), R.RELEASED):
            log.info("nothing to release", order_id=order_id, state=reservation.state if reservation else None)
            return "noop"
        lines = await repo.lines_of(conn, reservation.id)
        await self._step(conn, reservation, lines, R.RELEASED, reason=reason, cause=cause)
        await self.emit(
            conn, inv.InventoryReleased(order_id=order_id, reservation_id=reservation.id, reason=reason), cause
        )
        metrics.RESERVATIONS.labels("released").inc()
        return "released"

    async def _restock(
        self, conn: AsyncConnection, reservation: Row[Any], reason: str, cause: CloudEvent | None
    ) -> str:
        lines = await repo.lines_of(conn, reservation.id)
        await self._step(conn, reservation, lines, R.RESTOCKED, reason=reason, cause=cause)
        await self.emit(
            conn,
            inv.InventoryRestocked(
                order_id=reservation.order_id,
                reason=reason,
                lines=[Line(sku=sku, quantity=q) for sku, q in lines.items()],
            ),
            cause,
        )
        metrics.RESERVATIONS.labels("restocked").inc()
        return "restocked"

    async def _commit_failed(
        self, conn: AsyncConnection, order_id: str, reason: str, lines: list[inv.RejectedLine], cause: CloudEvent | None
    ) -> None:
        payload = inv.InventoryCommitFailed(order_id=order_id, reason=reason, lines=lines)
        await self.emit(conn, payload, cause)
        metrics.RESERVATIONS.labels("commit_failed").inc()
        log.warning("paid order's stock could not be committed", order_id=order_id, reason=reason)

    # -- order.events.v1 ------------------------------------------------------------------------
    # Reservations and the stock ledger keep the order id as text: each handler passes str(p.order_id).

    async def on_placed(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderPlaced) -> None:
        if not p.lines:
            raise PoisonMessage("order.placed without lines")
        await self.reserve(
            conn, str(p.order_id), [(line.sku, line.quantity) for line in p.lines], event, hold=p.hold_seconds
        )

    async def on_payment_session_opened(
        self, conn: AsyncConnection, event: CloudEvent, p: o.OrderPaymentSessionOpened
    ) -> None:
        await self.lengthen_hold(conn, str(p.order_id), p.hold_seconds)

    async def on_paid(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderPaid) -> None:
        await self.commit(conn, str(p.order_id), event, trigger="order paid")

    async def on_payment_authorized(
        self, conn: AsyncConnection, event: CloudEvent, p: o.OrderPaymentAuthorized
    ) -> None:
        # manual capture: the stock is sold before the money is captured; the later order.paid is a no-op
        await self.commit(conn, str(p.order_id), event, trigger="payment authorized")

    async def on_cancelled(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderStateChanged) -> None:
        await self.cancel(conn, str(p.order_id), p.reason, event)

    async def on_expired(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderStateChanged) -> None:
        await self.release(conn, str(p.order_id), "order_expired", event)

    async def on_refunded(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderRefundConfirmed) -> None:
        if not p.restock:
            log.info("refund without restock", order_id=str(p.order_id), refund_id=str(p.refund_id))
            return
        # the refund names no lines, so a restock returns every unit the order bought (see README)
        await self.restock(conn, str(p.order_id), f"refund {p.refund_id}", event)

    def order_handlers(self) -> dict[type[Payload], Handler]:
        return {
            o.OrderPlaced: self.on_placed,
            o.OrderPaymentSessionOpened: self.on_payment_session_opened,
            o.OrderPaid: self.on_paid,
            o.OrderPaymentAuthorized: self.on_payment_authorized,
            o.OrderCancelled: self.on_cancelled,
            o.OrderExpired: self.on_expired,
            o.OrderRefunded: self.on_refunded,
            o.OrderPartiallyRefunded: self.on_refunded,
        }


def _rejected_line(shortage: Shortage) -> inv.RejectedLine:
    return inv.RejectedLine(
        sku=shortage.sku, requested=shortage.requested, available=shortage.available, reason=shortage.reason
    )
