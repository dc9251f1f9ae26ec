"""Stock and reservation queries, and the one place stock columns change: a conditional update plus
its ledger row, in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_inventory import metrics
from handshake_inventory.db import (
    reservation_lines,
    reservation_transitions,
    reservations,
    stock_items,
    stock_movements,
)
from handshake_inventory.domain.reservations import RESERVATION_LIFECYCLE, ReservationState
from handshake_inventory.domain.stock import Deltas, MovementKind, transfer
from handshake_shared.db import built_once
from handshake_shared.locks import AdvisoryLock, lock_for_transaction
from handshake_shared.transitions import AuditedLifecycle, TransitionLost

log = structlog.get_logger("inventory")


class StockInvariantViolated(Exception):
    """A movement found fewer units than it must take: applying it would drive a column negative.
    Raised inside the transaction, so nothing of the step is kept."""


class AvailableChanged(Exception):
    """An admin set the available count against a figure that has changed since they read it."""

    def __init__(self, current: int) -> None:
        super().__init__(f"available is now {current}")
        self.current = current


# statements every reservation runs, built once (handshake_shared.db.built_once says why)
_MOVEMENT = insert(stock_movements)
_RESERVATION = select(reservations).where(reservations.c.order_id == bindparam("order_id"))
_LOCKED_RESERVATION = _RESERVATION.with_for_update()
# the reservation lifecycle's one writer: the table checked, the state compared-and-set, the history row, counted
RESERVATION_STEPS = AuditedLifecycle(
    RESERVATION_LIFECYCLE,
    rows=reservations,
    audit=reservation_transitions,
    subject="reservation_id",
    applied=metrics.RESERVATION_TRANSITIONS,
    refused=metrics.RESERVATION_TRANSITIONS_REFUSED,
)


# -- stock ----------------------------------------------------------------------------------------


async def lock_stock(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, int]:
    """Row-lock the known SKUs among `skus` in SKU order (the one lock order every writer uses);
    returns the available count of each. Unknown SKUs are simply absent."""
    rows = await conn.execute(
        select(stock_items.c.sku, stock_items.c.available)
        .where(stock_items.c.sku.in_(sorted(set(skus))))
        .order_by(stock_items.c.sku)
        .with_for_update()
    )
    return {r.sku: r.available for r in rows}


async def move(
    conn: AsyncConnection,
    sku: str,
    kind: MovementKind,
    quantity: int,
    *,
    reason: str,
    actor: str,
    order_id: str | None = None,
    event_id: str | None = None,
) -> None:
    """Shift units between columns with a conditional update: every column that loses units must
    still hold them (for a reservation: WHERE available >= quantity)."""
    deltas = transfer(kind, quantity)
    losing = tuple(name for name, delta in _columns(deltas) if delta < 0)
    result = await conn.execute(
        _move_statement(losing),
        {
            "move_sku": sku,
            **{f"delta_{name}": delta for name, delta in _columns(deltas)},
            **{f"need_{name}": -delta for name, delta in _columns(deltas) if delta < 0},
        },
    )
    if result.rowcount != 1:
        raise StockInvariantViolated(f"{kind} of {quantity} x {sku} for order {order_id}: the units are not there")
    await _record(conn, sku, kind, deltas, reason=reason, actor=actor, order_id=order_id, event_id=event_id)


@built_once
def _move_statement(losing: tuple[str, ...]) -> Any:
    """Shift units by `delta_<column>`; each column in `losing` must still hold `need_<column>` units."""
    c = stock_items.c
    return (
        update(stock_items)
        .where(c.sku == bindparam("move_sku"), *(c[name] >= bindparam(f"need_{name}") for name in losing))
        .values(
            available=c.available + bindparam("delta_available"),
            reserved=c.reserved + bindparam("delta_reserved"),
            sold=c.sold + bindparam("delta_sold"),
            updated_at=func.now(),
        )
    )


async def set_available(
    conn: AsyncConnection, sku: str, available: int, *, reason: str, actor: str, expected: int | None = None
) -> tuple[Row[Any], int]:
    """Set a SKU's available count (creating the SKU at zero first if it is new); returns the row and
    the delta, which the ledger records as an adjustment. Reserved and sold units are untouched."""
    await conn.execute(pg_insert(stock_items).values(sku=sku).on_conflict_do_nothing(index_elements=["sku"]))
    current = (
        await conn.execute(select(stock_items.c.available).where(stock_items.c.sku == sku).with_for_update())
    ).scalar_one()
    if expected is not None and expected != current:
        raise AvailableChanged(current)
    row = (
        await conn.execute(
            update(stock_items)
            .where(stock_items.c.sku == sku)
            .values(available=available, updated_at=func.now())
            .returning(*stock_items.c)
        )
    ).one()
    delta = available - current
    await _record(conn, sku, MovementKind.ADJUST, Deltas(delta, 0, 0), reason=reason, actor=actor)
    return row, delta


async def get_stock(conn: AsyncConnection, sku: str) -> Row[Any] | None:
    return (await conn.execute(select(stock_items).where(stock_items.c.sku == sku))).first()


async def list_stock(conn: AsyncConnection, *, after: str | None, limit: int) -> list[Row[Any]]:
    query = select(stock_items).order_by(stock_items.c.sku).limit(limit)
    if after is not None:
        query = query.where(stock_items.c.sku > after)
    return list((await conn.execute(query)).all())


async def recent_movements(conn: AsyncConnection, sku: str, limit: int) -> list[Row[Any]]:
    query = (
        select(stock_movements).where(stock_movements.c.sku == sku).order_by(stock_movements.c.id.desc()).limit(limit)
    )
    return list((await conn.execute(query)).all())


async def _record(
    conn: AsyncConnection,
    sku: str,
    kind: MovementKind,
    deltas: Deltas,
    *,
    reason: str,
    actor: str,
    order_id: str | None = None,
    event_id: str | None = None,
) -> None:
    await conn.execute(
        _MOVEMENT,
        {
            "sku": sku,
            "kind": kind,
            "delta_available": deltas.available,
            "delta_reserved": deltas.reserved,
            "delta_sold": deltas.sold,
            "reason": reason,
            "order_id": order_id,
            "event_id": event_id,
            "actor": actor,
        },
    )


def _columns(deltas: Deltas) -> list[tuple[str, int]]:
    return [("available", deltas.available), ("reserved", deltas.reserved), ("sold", deltas.sold)]


# -- reservations ---------------------------------------------------------------------------------


async def lock_order(conn: AsyncConnection, order_id: str) -> None:
    """Serialise reservation attempts for one order until the transaction ends, so a second order.placed
    for the same order (another event id) waits, then finds the reservation instead of racing it."""
    await lock_for_transaction(conn, AdvisoryLock.INVENTORY_ORDER, order_id)


async def find_reservation(conn: AsyncConnection, order_id: str, *, lock: bool = False) -> Row[Any] | None:
    return (await conn.execute(_LOCKED_RESERVATION if lock else _RESERVATION, {"order_id": order_id})).first()


async def lengthen_hold(conn: AsyncConnection, reservation_id: uuid.UUID, seconds_from_creation: int) -> datetime:
    """expires_at = creation + seconds, never earlier than it already is (a replay or a late request changes
    nothing); database time, like the sweeper's comparisons. The caller holds the reservation's row lock."""
    return (
        await conn.execute(
            update(reservations)
            .where(reservations.c.id == reservation_id)
            .values(
                expires_at=func.greatest(
                    reservations.c.expires_at, reservations.c.created_at + timedelta(seconds=seconds_from_creation)
                ),
                updated_at=func.now(),
            )
            .returning(reservations.c.expires_at)
        )
    ).scalar_one()


async def lines_of(conn: AsyncConnection, reservation_id: uuid.UUID) -> dict[str, int]:
    """Quantity per SKU, in SKU order (the lock order)."""
    rows = await conn.execute(
        select(reservation_lines.c.sku, reservation_lines.c.quantity)
        .where(reservation_lines.c.reservation_id == reservation_id)
        .order_by(reservation_lines.c.sku)
    )
    return {r.sku: r.quantity for r in rows}


async def create_reservation(
    conn: AsyncConnection,
    order_id: str,
    lines: Mapping[str, int],
    *,
    ttl_seconds: int,
    reason: str,
    actor: str,
    event_id: str | None = None,
) -> Row[Any]:
    """Insert a held reservation and the first row of its history. Callers hold lock_order; the
    unique order_id is the backstop."""
    row = (
        await conn.execute(
            insert(reservations)
            .values(
                id=uuid.uuid4(),
                order_id=order_id,
                state=ReservationState.HELD,
                # database time, like the expiry checks that will compare against it
                expires_at=func.now() + timedelta(seconds=ttl_seconds),
            )
            .returning(*reservations.c)
        )
    ).one()
    await conn.execute(
        insert(reservation_lines), [{"reservation_id": row.id, "sku": sku, "quantity": q} for sku, q in lines.items()]
    )
    await RESERVATION_STEPS.record(
        conn, row.id, None, ReservationState.HELD, reason=reason, audit={"actor": actor, "event_id": event_id}
    )
    return row


async def lock_overdue_held(conn: AsyncConnection, *, skip: Iterable[uuid.UUID] = ()) -> Row[Any] | None:
    """Row-lock the held reservation that expired first, skipping rows another transaction holds:
    a replica's sweeper or a payment committing it. Whichever locks the row first decides its fate;
    the other finds it no longer held (a payment blocked behind us then sees `expired`)."""
    query = (
        select(reservations)
        .where(reservations.c.state == ReservationState.HELD, reservations.c.expires_at < func.now())
        .order_by(reservations.c.expires_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    skipped = list(skip)
    if skipped:
        query = query.where(reservations.c.id.not_in(skipped))
    return (await conn.execute(query)).first()


async def transition(
    conn: AsyncConnection,
    reservation: Row[Any],
    target: ReservationState,
    *,
    reason: str,
    actor: str,
    event_id: str | None = None,
) -> None:
    """Apply a lifecycle step the caller already checked with RESERVATION_LIFECYCLE.can (before
    touching stock); checking again here means no code path can skip the table. Every applied step
    is a history row."""
    current = ReservationState(reservation.state)
    try:
        await RESERVATION_STEPS.move(
            conn,
            reservation.id,
            current,
            target,
            reason=reason,
            strict=True,
            audit={"actor": actor, "event_id": event_id},
            log_fields={"order_id": reservation.order_id},
        )
    except TransitionLost:
        raise StockInvariantViolated(f"reservation {reservation.id} left {current} under our lock") from None


async def history_of(conn: AsyncConnection, reservation_id: uuid.UUID) -> list[Row[Any]]:
    t = reservation_transitions
    query = select(t).where(t.c.reservation_id == reservation_id).order_by(t.c.id)
    return list((await conn.execute(query)).all())


async def movements_of_order(conn: AsyncConnection, order_id: str) -> list[Row[Any]]:
    query = select(stock_movements).where(stock_movements.c.order_id == order_id).order_by(stock_movements.c.id)
    return list((await conn.execute(query)).all())
