"""Orders that stopped moving. A draft that never heard back from inventory is re-driven (order.placed
again: inventory answers a duplicate placement with the reservation it already holds); an order
waiting for payment far beyond the reservation's life is flagged for a person, and payment's
reconciliation asks the provider; a paid order that inventory never answered (its commit lost or
dead-lettered) is flagged too, since money is held for it. A gauge per state counts them."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import and_, exists, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order.db import order_notes, orders
from handshake_order.domain.states import OrderState as S
from handshake_order.metrics import FLAGGED, REDRIVEN, STUCK
from handshake_order.settings import OrderSettings
from handshake_shared.db import Database
from handshake_shared.events.base import Line
from handshake_shared.events.order import OrderPlaced
from handshake_shared.loops import BackgroundLoop
from handshake_shared.outbox import Outbox

log = structlog.get_logger("order.stuck")


ACTOR = "stuck-order-scanner"
_FOLLOW_UP = {
    S.PAYMENT_PENDING: "payment reconciliation asks the provider",
    S.PAID: "the money is held but inventory never answered: check the order's inventory events and dead letters",
}


class StuckOrderScanner:
    def __init__(self, db: Database, outbox: Outbox, settings: OrderSettings) -> None:
        self.db = db
        self.outbox = outbox
        self.thresholds = {
            S.DRAFT: settings.stuck_draft_after_seconds,
            S.PAYMENT_PENDING: settings.stuck_payment_pending_after_seconds,
            S.PAID: settings.stuck_paid_after_seconds,
        }
        self.interval = settings.stuck_scan_interval_seconds
        self.batch = 100
        for state in self.thresholds:  # exported from the start, not only after the first scan
            STUCK.labels(state).set(0)

        # the first scan one interval after start; a failed one is logged and counted by the loop
        self.loop = BackgroundLoop("stuck_order_scan", self._round, interval_seconds=self.interval, run_at_start=False)

    async def _round(self) -> None:
        await self.scan_once()

    async def scan_once(self) -> dict[str, Any]:
        found: dict[str, list[str]] = {}
        for state, seconds in self.thresholds.items():
            async with self.db.transaction() as conn:
                rows = (
                    await conn.execute(
                        select(orders)
                        .where(orders.c.state == state, orders.c.updated_at < func.now() - _seconds(seconds))
                        .order_by(orders.c.updated_at)
                        .limit(self.batch)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                STUCK.labels(state).set(len(rows))
                found[state] = [str(r.id) for r in rows]
                for row in rows:
                    if state == S.DRAFT:
                        await self._redrive(conn, row, seconds)
                    else:
                        await self._flag(conn, row, seconds)
        return found

    async def _already(self, conn: AsyncConnection, order_id: uuid.UUID, kind: str, seconds: int) -> bool:
        recent = select(order_notes.c.id).where(
            and_(
                order_notes.c.order_id == order_id,
                order_notes.c.kind == kind,
                order_notes.c.at > func.now() - _seconds(seconds),
            )
        )
        return bool((await conn.execute(select(exists(recent)))).scalar())

    async def redrive_one(self, conn: AsyncConnection, row: Any, *, actor: str, reason: str) -> dict[str, Any]:
        """What a scan does for an order of this state, for this one order now, whatever its age (a person has
        decided it is stuck); `row` is locked by the caller. Says what it did."""
        state = S(row.state)
        if state not in self.thresholds:
            return {"action": "nothing", "detail": f"nothing re-drives an order that is {state}"}
        if state == S.DRAFT:
            if not await self._redrive(conn, row, 60, actor=actor, why=reason):
                return {"action": "recently-redriven", "detail": "order.placed was sent again less than a minute ago"}
            return {"action": "redriven", "detail": "order.placed sent again: inventory answers with its reservation"}
        await self._flag(conn, row, self.thresholds[state], actor=actor, why=reason, once=False)
        return {"action": "flagged", "detail": _FOLLOW_UP.get(state, "a person decides")}

    async def _redrive(
        self, conn: AsyncConnection, row: Any, seconds: int, *, actor: str = ACTOR, why: str | None = None
    ) -> bool:
        # at most one re-drive per threshold (and never more often than once a minute)
        if await self._already(conn, row.id, "redrive", max(seconds, 60)):
            return False
        snapshot = row.snapshot
        await self.outbox.emit(
            conn,
            OrderPlaced(
                order_id=row.id,
                currency=row.currency,
                total=row.total,
                lines=[Line(sku=line["sku"], quantity=line["quantity"]) for line in snapshot["lines"]],
                hold_seconds=None if row.payment_session_opened else row.hold_seconds,
            ),
            order_id=row.id,
        )
        detail = (
            f"no stock answer after {seconds}s: order.placed sent again"
            if why is None
            else f"re-driven by staff: order.placed sent again: {why}"
        )
        await conn.execute(insert(order_notes).values(order_id=row.id, kind="redrive", detail=detail, actor=actor))
        REDRIVEN.labels(S.DRAFT).inc()
        log.warning("stuck draft re-driven", order_id=str(row.id), actor=actor)
        return True

    async def _flag(
        self,
        conn: AsyncConnection,
        row: Any,
        seconds: int,
        *,
        actor: str = ACTOR,
        why: str | None = None,
        once: bool = True,
    ) -> bool:
        if once and await self._already(conn, row.id, "stuck", 10 * 365 * 24 * 3600):
            return False
        follow_up = _FOLLOW_UP.get(row.state, "a person decides")
        detail = (
            f"{row.state} for more than {seconds}s; {follow_up}"
            if why is None
            else f"flagged as stuck by staff ({row.state}); {follow_up}: {why}"
        )
        await conn.execute(insert(order_notes).values(order_id=row.id, kind="stuck", actor=actor, detail=detail))
        FLAGGED.labels(row.state).inc()
        log.warning("stuck order flagged", order_id=str(row.id), state=row.state, actor=actor)
        return True


def _seconds(seconds: int):  # type: ignore[no-untyped-def]
    return text(f"interval '{int(seconds)} seconds'")
