"""Reservation expiry: held reservations past expires_at give their units back and the order is told
(inventory.reservation_expired). Safe with several replicas and against a payment committing the same
reservation: each reservation is row-locked with SKIP LOCKED and expired in its own transaction, with
its ledger rows, history row and outbox row."""

from __future__ import annotations

import time
import uuid

import structlog

from handshake_inventory import metrics
from handshake_inventory import repository as repo
from handshake_inventory.handlers import InventoryEventHandlers
from handshake_shared.db import Database
from handshake_shared.loops import BackgroundLoop

log = structlog.get_logger("inventory")


class ReservationSweeper:
    def __init__(
        self, db: Database, handlers: InventoryEventHandlers, *, batch_size: int, interval_seconds: float
    ) -> None:
        self.db = db
        self.handlers = handlers
        self.batch_size = batch_size
        self.interval = interval_seconds
        self.loop = BackgroundLoop("expiry_sweeper", self._round, interval_seconds=interval_seconds)

    async def sweep_once(self) -> int:
        """Expire up to batch_size overdue reservations, oldest first; returns how many were expired.
        One that fails is skipped for the rest of this sweep (so it cannot block the others) and
        tried again by the next one."""
        expired = 0
        failed: set[uuid.UUID] = set()
        for _ in range(self.batch_size):
            reservation_id: uuid.UUID | None = None
            try:
                async with self.db.transaction() as conn:
                    reservation = await repo.lock_overdue_held(conn, skip=failed)
                    if reservation is None:
                        break
                    reservation_id = reservation.id
                    await self.handlers.expire(conn, reservation)
            except Exception as exc:
                if reservation_id is None:
                    raise  # could not even look: the database is down, the whole sweep fails
                failed.add(reservation_id)
                metrics.EXPIRY_SWEEP_FAILURES.inc()
                log.error("reservation could not be expired", reservation_id=str(reservation_id), error=repr(exc))
                continue
            expired += 1
        if not failed:
            metrics.EXPIRY_SWEEP_LAST_SUCCESS.set(time.time())
        if expired:
            log.info("reservations expired", count=expired)
        return expired

    async def _round(self) -> bool:
        try:
            expired = await self.sweep_once()
        except Exception:  # database down: the loop logs it and backs off
            metrics.EXPIRY_SWEEP_FAILURES.inc()
            raise
        # a full batch means a backlog: sweep again at once instead of waiting a whole interval
        return expired >= self.batch_size
