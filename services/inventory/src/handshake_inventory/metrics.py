"""Inventory metrics. Counters move with each saga step; gauges are recomputed from the database."""

from __future__ import annotations

from prometheus_client import Counter, Gauge
from sqlalchemy import text

from handshake_shared.db import Database
from handshake_shared.loops import BackgroundLoop

RESERVATIONS = Counter(
    "handshake_inventory_reservations_total",
    "Reservation outcomes: reserved, rejected, committed, rereserved (committed after the hold lapsed), "
    "commit_failed, released, expired (by the sweeper), restocked",
    ["outcome"],
)
REJECTED_LINES = Counter(
    "handshake_inventory_rejected_lines_total", "Order lines that could not be reserved, by reason", ["reason"]
)
UNITS_MOVED = Counter(
    "handshake_inventory_units_moved_total", "Units moved between stock columns by saga steps", ["kind"]
)
EXPIRY_SWEEP_FAILURES = Counter(
    "handshake_inventory_expiry_sweep_failures_total",
    "Overdue reservations the sweeper failed to expire (retried next sweep), and sweeps that failed outright",
)
EXPIRY_SWEEP_LAST_SUCCESS = Gauge(
    "handshake_inventory_expiry_sweep_last_success_timestamp_seconds",
    "When a sweep last finished without errors: alert when it falls behind the sweep interval",
)
RESERVATION_TRANSITIONS = Counter(
    "handshake_inventory_reservation_transitions_total",
    "Applied reservation transitions",
    ["from_state", "to_state"],
)
RESERVATION_TRANSITIONS_REFUSED = Counter(
    "handshake_inventory_reservation_transitions_refused_total",
    "Reservation transitions refused by the lifecycle table",
    ["from_state", "to_state"],
)
HOLDS_EXTENDED = Counter(
    "handshake_inventory_holds_extended_total",
    "Short guest holds lengthened to the full checkout hold because the customer opened the payment session",
)
ADJUSTMENTS = Counter("handshake_inventory_stock_adjustments_total", "Admin stock adjustments applied")
HELD_RESERVATIONS = Gauge("handshake_inventory_held_reservations", "Reservations currently holding stock")
OVERDUE_RESERVATIONS = Gauge(
    "handshake_inventory_overdue_reservations",
    "Held reservations past expires_at that no sweep has expired yet: near zero unless the sweeper is behind",
)
OUT_OF_STOCK_SKUS = Gauge("handshake_inventory_out_of_stock_skus", "SKUs with nothing available to reserve")


async def refresh_gauges(db: Database) -> None:
    async with db.read() as conn:
        held, overdue = (
            await conn.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE expires_at < now()) FROM reservations WHERE state = 'held'"
                )
            )
        ).one()
        out_of_stock = (await conn.execute(text("SELECT count(*) FROM stock_items WHERE available = 0"))).scalar_one()
    HELD_RESERVATIONS.set(held)
    OVERDUE_RESERVATIONS.set(overdue)
    OUT_OF_STOCK_SKUS.set(out_of_stock)


def gauge_refresher(db: Database, interval_seconds: float) -> BackgroundLoop:
    """The gauges read again every interval; while the database is down they keep their last value."""

    async def refresh() -> None:
        await refresh_gauges(db)

    return BackgroundLoop("gauge_refresher", refresh, interval_seconds=interval_seconds)
