"""The inventory side of the saga: order facts reserve, commit and release stock. Each handler runs
in the consumer's transaction, so the inbox row, stock changes, ledger rows, reservation and outbox
rows commit together or not at all."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_inventory import metrics
from handshake_inventory import repository as repo
from handshake_inventory.domain.reservations import RESERVATION_LIFECYCLE
from handshake_inventory.domain.reservations import ReservationState as R
from handshake_inventory.domain.stock import MovementKind, Shortage, merge_lines, shortages
from handshake_inventory.settings import InventorySettings
from handshake_shared.consumer import Handler, PoisonMessage
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import INVENTORY_EVENTS
from handshake_shared.events import inventory as inv
from handshake_shared.events import order as o
from handshake_shared.events.base import Line
from handshake_shared.outbox import Outbox

log = structlog.get_logger("inventory")

ACTOR = "inventory-service"


class InventorySaga:
    def __init__(self, outbox: Outbox, settings: InventorySettings) -> None:
        self.outbox = outbox
        self.ttl_seconds = settings.reservation_ttl_seconds

    async def emit(self, conn: AsyncConnection, type: str, order_id: str, data: Any, cause: CloudEvent | None) -> None:
        await self.outbox.emit(conn, topic=INVENTORY_EVENTS, type=type, order_id=order_id, data=data, cause=cause)

    # -- the three stock operations -------------------------------------------------------------

    async def reserve(
        self, conn: AsyncConnection, order_id: str, lines: Iterable[tuple[str, int]], cause: CloudEvent | None
    ) -> str:
        """Hold every line or none. Rows are locked in SKU order, the whole order is checked against
        the locked figures, and only then moved with conditional updates: a rejection changes nothing."""
        await repo.lock_order(conn, order_id)
        if await repo.find_reservation(conn, order_id) is not None:
            log.info("order already has a reservation", order_id=order_id)
            return "duplicate"
        requested = merge_lines(lines)
        short = shortages(requested, await repo.lock_stock(conn, requested))
        if short:
            rejected = [_rejected_line(s) for s in short]
            await self.emit(
                conn, "inventory.rejected", order_id, inv.InventoryRejected(order_id=order_id, lines=rejected), cause
            )
            metrics.RESERVATIONS.labels("rejected").inc()
            for s in short:
                metrics.REJECTED_LINES.labels(s.reason).inc()
            log.info("reservation rejected", order_id=order_id, short=[s.sku for s in short])
            return "rejected"
        event_id = str(cause.id) if cause else None
        for sku, quantity in requested.items():
            await repo.move(
                conn, sku, MovementKind.RESERVE, quantity, reason="order placed", actor=ACTOR, order_id=order_id,
                event_id=event_id,
            )  # fmt: skip
            metrics.UNITS_MOVED.labels(MovementKind.RESERVE).inc(quantity)
        reservation = await repo.create_reservation(conn, order_id, requested, ttl_seconds=self.ttl_seconds)
        await self.emit(
            conn, "inventory.reserved", order_id,
            inv.InventoryReserved(
                order_id=order_id, reservation_id=str(reservation.id), expires_at=reservation.expires_at,
                lines=[Line(sku=sku, quantity=q) for sku, q in requested.items()],
            ),
            cause,
        )  # fmt: skip
        metrics.RESERVATIONS.labels("reserved").inc()
        return "reserved"

    async def commit(self, conn: AsyncConnection, order_id: str, cause: CloudEvent | None) -> str:
        """Sell what the order's held reservation holds. Anything else is a commit failure: units
        that are not reserved for this order are never sold. A held reservation past expires_at that
        no sweeper has released yet still holds its units, so committing it sells only reserved stock."""
        reservation = await repo.find_reservation(conn, order_id, lock=True)
        if reservation is not None and reservation.state == R.COMMITTED:
            log.info("reservation already committed", order_id=order_id)
            return "duplicate"
        if reservation is None or not RESERVATION_LIFECYCLE.can(R(reservation.state), R.COMMITTED):
            await self._commit_failed(conn, order_id, reservation, cause)
            return "commit_failed"
        lines = await repo.lines_of(conn, reservation.id)
        event_id = str(cause.id) if cause else None
        for sku, quantity in lines.items():
            await repo.move(
                conn, sku, MovementKind.COMMIT, quantity, reason="order paid", actor=ACTOR, order_id=order_id,
                event_id=event_id,
            )  # fmt: skip
            metrics.UNITS_MOVED.labels(MovementKind.COMMIT).inc(quantity)
        await repo.transition(conn, reservation, R.COMMITTED)
        await self.emit(
            conn, "inventory.committed", order_id,
            inv.InventoryCommitted(order_id=order_id, reservation_id=str(reservation.id)), cause,
        )  # fmt: skip
        metrics.RESERVATIONS.labels("committed").inc()
        return "committed"

    async def release(self, conn: AsyncConnection, order_id: str, reason: str, cause: CloudEvent | None) -> str:
        """Return a held reservation's units to available. A missing (rejected order), committed
        (sold) or already released reservation is left as it is."""
        reservation = await repo.find_reservation(conn, order_id, lock=True)
        if reservation is None or not RESERVATION_LIFECYCLE.can(R(reservation.state), R.RELEASED):
            log.info("nothing to release", order_id=order_id, state=reservation.state if reservation else None)
            return "noop"
        lines = await repo.lines_of(conn, reservation.id)
        event_id = str(cause.id) if cause else None
        for sku, quantity in lines.items():
            await repo.move(
                conn, sku, MovementKind.RELEASE, quantity, reason=reason, actor=ACTOR, order_id=order_id,
                event_id=event_id,
            )  # fmt: skip
            metrics.UNITS_MOVED.labels(MovementKind.RELEASE).inc(quantity)
        await repo.transition(conn, reservation, R.RELEASED)
        await self.emit(
            conn, "inventory.released", order_id,
            inv.InventoryReleased(order_id=order_id, reservation_id=str(reservation.id), reason=reason), cause,
        )  # fmt: skip
        metrics.RESERVATIONS.labels("released").inc()
        return "released"

    async def _commit_failed(
        self, conn: AsyncConnection, order_id: str, reservation: Any, cause: CloudEvent | None
    ) -> None:
        if reservation is None:
            reason, lines = "reservation_missing", {}
        else:
            reason, lines = f"reservation_{reservation.state}", await repo.lines_of(conn, reservation.id)
        # what is free now tells the order service whether re-reserving could still succeed
        available = await repo.available_of(conn, lines)
        rejected = [
            inv.RejectedLine(sku=sku, requested=q, available=available.get(sku, 0), reason=reason)
            for sku, q in lines.items()
        ]
        # InventoryRejected keeps extra fields: the top-level reason also covers a reservation with no lines to name
        payload = inv.InventoryRejected(order_id=order_id, lines=rejected, reason=reason)  # type: ignore[call-arg]
        await self.emit(conn, "inventory.commit_failed", order_id, payload, cause)
        metrics.RESERVATIONS.labels("commit_failed").inc()
        log.warning("paid order has no held reservation", order_id=order_id, reason=reason)

    # -- order.events.v1 ------------------------------------------------------------------------

    async def on_placed(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderPlaced) -> None:
        if not p.lines:
            raise PoisonMessage("order.placed without lines")
        await self.reserve(conn, p.order_id, [(line.sku, line.quantity) for line in p.lines], event)

    async def on_paid(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderPaid) -> None:
        await self.commit(conn, p.order_id, event)

    async def on_cancelled(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderStateChanged) -> None:
        await self.release(conn, p.order_id, "order_cancelled", event)

    async def on_expired(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderStateChanged) -> None:
        await self.release(conn, p.order_id, "order_expired", event)

    def order_handlers(self) -> dict[str, Handler]:
        return {
            "order.placed": self.on_placed,
            "order.paid": self.on_paid,
            "order.cancelled": self.on_cancelled,
            "order.expired": self.on_expired,
        }


def _rejected_line(shortage: Shortage) -> inv.RejectedLine:
    return inv.RejectedLine(
        sku=shortage.sku, requested=shortage.requested, available=shortage.available, reason=shortage.reason
    )
