"""Admin HTTP routes of the inventory service (thin: check the role, call one thing, answer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.engine import Row

from handshake_inventory import metrics
from handshake_inventory import repository as repo
from handshake_inventory.settings import InventorySettings
from handshake_shared.auth import require_roles
from handshake_shared.db import Database
from handshake_shared.http import Problem

# Text a request may carry: no control characters (PostgreSQL cannot store NUL in text; the others end up
# in the ledger and logs). Lengths are those of the columns the text goes to.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"

Authorization = Annotated[str | None, Header()]
Sku = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE)]

# an int column; far above any real shelf, far below where reserved + sold could overflow it
MAX_UNITS = 1_000_000_000
RECENT_MOVEMENTS = 20


@dataclass
class InventoryContext:
    db: Database
    settings: InventorySettings


class StockLevelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    available: int = Field(ge=0, le=MAX_UNITS)
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500, pattern=PRINTABLE)]
    # optional optimistic check: refuse with 409 if available is no longer what the operator saw
    expected_available: int | None = Field(default=None, ge=0, le=MAX_UNITS)


def stock_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "sku": row.sku,
        "available": row.available,
        "reserved": row.reserved,
        "sold": row.sold,
        "updated_at": row.updated_at.isoformat(),
    }


def movement_view(m: Row[Any]) -> dict[str, Any]:
    return {
        "sku": m.sku,
        "kind": m.kind,
        "delta_available": m.delta_available,
        "delta_reserved": m.delta_reserved,
        "delta_sold": m.delta_sold,
        "reason": m.reason,
        "order_id": m.order_id,
        "event_id": m.event_id,
        "actor": m.actor,
        "at": m.at.isoformat(),
    }


def transition_view(t: Row[Any]) -> dict[str, Any]:
    return {
        "from_state": t.from_state,
        "to_state": t.to_state,
        "reason": t.reason,
        "actor": t.actor,
        "event_id": t.event_id,
        "at": t.at.isoformat(),
    }


def build_router(ctx: InventoryContext) -> APIRouter:
    router = APIRouter(prefix="/v1/admin")

    @router.get("/stock")
    async def list_stock(
        authorization: Authorization = None,
        after: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    ) -> dict[str, Any]:
        require_roles(ctx.settings, authorization, "admin")
        async with ctx.db.read() as conn:
            rows = await repo.list_stock(conn, after=after, limit=limit)
        return {"items": [stock_view(r) for r in rows], "next_after": rows[-1].sku if len(rows) == limit else None}

    @router.get("/stock/{sku}")
    async def get_stock(sku: Sku, authorization: Authorization = None) -> dict[str, Any]:
        require_roles(ctx.settings, authorization, "admin")
        async with ctx.db.read() as conn:
            row = await repo.get_stock(conn, sku)
            if row is None:
                raise Problem(404, "SKU not found", f"no stock is recorded for {sku}", type="sku-not-found")
            movements = await repo.recent_movements(conn, sku, RECENT_MOVEMENTS)
        return {
            **stock_view(row),
            "recent_movements": [movement_view(m) for m in movements],
        }

    @router.put("/stock/{sku}")
    async def set_stock(sku: Sku, body: StockLevelIn, authorization: Authorization = None) -> dict[str, Any]:
        principal = require_roles(ctx.settings, authorization, "admin")
        try:
            async with ctx.db.transaction() as conn:
                row, delta = await repo.set_available(
                    conn,
                    sku,
                    body.available,
                    reason=body.reason,
                    actor=principal.subject,
                    expected=body.expected_available,
                )
        except repo.AvailableChanged as exc:
            raise Problem(
                409,
                "Stock changed",
                f"{sku} has {exc.current} available now, not {body.expected_available}",
                type="stock-changed",
                available=exc.current,
            ) from None
        metrics.ADJUSTMENTS.inc()
        return {**stock_view(row), "delta_available": delta}

    @router.get("/reservations/{order_id}")
    async def get_reservation(
        order_id: Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE)],
        authorization: Authorization = None,
    ) -> dict[str, Any]:
        # read-only, so support and finance may look too: "why was this order not shipped / where did the units
        # go", "was the refunded order restocked"
        require_roles(ctx.settings, authorization, "admin", "support", "finance")
        async with ctx.db.read() as conn:
            reservation = await repo.find_reservation(conn, order_id)
            if reservation is None:
                raise Problem(
                    404, "Reservation not found", f"order {order_id} holds no reservation", type="reservation-not-found"
                )
            lines = await repo.lines_of(conn, reservation.id)
            history = await repo.history_of(conn, reservation.id)
            movements = await repo.movements_of_order(conn, order_id)
        return {
            "reservation_id": str(reservation.id),
            "order_id": reservation.order_id,
            "state": reservation.state,
            "expires_at": reservation.expires_at.isoformat(),
            "created_at": reservation.created_at.isoformat(),
            "updated_at": reservation.updated_at.isoformat(),
            "lines": [{"sku": sku, "quantity": q} for sku, q in lines.items()],
            # every state the reservation went through, oldest first, with why, who and which event
            "history": [transition_view(t) for t in history],
            # every stock movement made for the order, oldest first: the units behind each step
            "movements": [movement_view(m) for m in movements],
        }

    return router
