"""Order changes, pushed to the requests waiting for them (GET /v1/orders/{id}?wait_for_change=...).

Every change of an order row notifies CHANNEL in the transaction that makes it (repository.apply), so
PostgreSQL delivers the notification only when that transaction commits, and never for one rolled back. One
connection per process listens and sets the events of the requests waiting on that order; a waiter then
re-reads the order itself. Nothing runs against the database while nothing changes.

The notification is a hint, the order row is the truth: a waiter registers before it reads the version it
compares, so a commit between that read and the wait still sets its event; and when the listening connection
is lost, every waiter is woken on reconnect to re-read, since commits made while nobody listened were never
heard."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from handshake_order.metrics import RECONNECTS, WAITERS
from handshake_shared.db import async_url

log = structlog.get_logger("order")

# payload: "<order id>:<new version>"
CHANNEL = "handshake_order_changed"


def listener_dsn(database_url: str) -> str:
    """The service's database URL as asyncpg itself takes it (the engine's URL names SQLAlchemy's dialect)."""
    return make_url(async_url(database_url)).set(drivername="postgresql").render_as_string(hide_password=False)


class OrderChanges:
    def __init__(
        self,
        database_url: str,
        *,
        max_waiters: int,
        server_settings: dict[str, str] | None = None,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self._dsn = listener_dsn(database_url)
        self._server_settings = server_settings or {}
        self.max_waiters = max_waiters
        self._max_backoff = max_backoff_seconds
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        # set at shutdown: a woken waiter answers with what it has instead of waiting again
        self.stopping = False
        # connections that started listening (the first and every reconnect)
        self.connects = 0

    @contextmanager
    def watch(self, order_id: uuid.UUID) -> Iterator[asyncio.Event | None]:
        """An event set whenever the order may have changed from now on; None when the process already has
        max_waiters requests waiting (the caller answers at once instead: a client asks again, nothing hangs
        past the bound)."""
        if self._count >= self.max_waiters:
            yield None
            return
        event = asyncio.Event()
        self._waiters.setdefault(order_id, set()).add(event)
        self._count += 1
        WAITERS.inc()
        try:
            yield event
        finally:
            waiting = self._waiters.get(order_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[order_id]
            self._count -= 1
            WAITERS.dec()

    @property
    def waiting(self) -> int:
        return self._count

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            order_id = uuid.UUID(payload.partition(":")[0])
        except ValueError:
            log.warning("order change notification not understood", payload=payload[:100])
            return
        for event in self._waiters.get(order_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiting in self._waiters.values():
            for event in waiting:
                event.set()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, server_settings=self._server_settings, timeout=10)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("order change listener cannot connect", error=type(exc).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            RECONNECTS.inc()
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                backoff = 0.1
                self.connects += 1
                self.listening.set()
                # anything committed while no connection listened was never heard: let every waiter re-read
                self._wake_all()
                await lost.wait()
                log.warning("order change listener lost its connection; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("order change listener failed; reconnecting", error=type(exc).__name__)
                await asyncio.sleep(backoff)
            finally:
                self.listening.clear()
                if not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.close(), timeout=2)
                    except Exception:
                        conn.terminate()
            self._wake_all()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="order-change-listener")

    async def stop(self) -> None:
        self.stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        # requests still waiting answer now with what they have, instead of holding shutdown up
        self._wake_all()
