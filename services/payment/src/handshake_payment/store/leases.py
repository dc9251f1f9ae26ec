"""The one lease statement: a short lease on one provider call for one row (create an intent, make a
refund), taken and released in transactions of their own (leases.py waits for it)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, func, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection


async def take(
    conn: AsyncConnection,
    table: Table,
    row_id: uuid.UUID,
    lease_seconds: float,
    *still_open: ColumnElement[bool],
    **also: Any,
) -> bool:
    """Lease the row while `still_open` holds and nobody holds an unexpired lease on it; `also` are further
    values written with the lease. The lease outlives a crashed holder only by lease_seconds."""
    taken = (
        await conn.execute(
            update(table)
            .where(
                table.c.id == row_id,
                *still_open,
                or_(table.c.locked_at.is_(None), table.c.locked_at < func.now() - timedelta(seconds=lease_seconds)),
            )
            .values(locked_at=func.now(), **also)
            .returning(table.c.id)
        )
    ).first()
    return taken is not None


async def release(conn: AsyncConnection, table: Table, row_id: uuid.UUID) -> None:
    await conn.execute(update(table).where(table.c.id == row_id).values(locked_at=None))
