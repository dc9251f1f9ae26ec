"""Composition root of the order service: settings, database, broker, consumers, relay, HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI

from handshake_order import SERVICE
from handshake_order import idempotency as idem
from handshake_order.api import OrderContext, build_router
from handshake_order.changes import OrderChanges
from handshake_order.checkout import Checkout
from handshake_order.db import messaging
from handshake_order.handlers import OrderEventHandlers
from handshake_order.limits import abuse_limits
from handshake_order.settings import OrderSettings, get_settings
from handshake_order.stuck import StuckOrderScanner
from handshake_shared.db import server_settings
from handshake_shared.events import INVENTORY_EVENTS, PAYMENT_EVENTS
from handshake_shared.logging import configure_logging
from handshake_shared.rate_limit import RateLimits
from handshake_shared.runtime import Runtime

log = structlog.get_logger("order")


def create_app(settings: OrderSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(SERVICE, settings.log_level)
    runtime = Runtime(service=SERVICE, settings=settings, tables=messaging)
    events = OrderEventHandlers(runtime.outbox)
    runtime.consume(
        INVENTORY_EVENTS,
        group="order.inventory-events",
        handlers=events.inventory_handlers(),
        on_dead_letter=events.flag_dead_letter,
    )
    runtime.consume(
        PAYMENT_EVENTS,
        group="order.payment-events",
        handlers=events.payment_handlers(),
        on_dead_letter=events.flag_dead_letter,
    )
    ctx = OrderContext(
        db=runtime.db, settings=settings, checkout=Checkout(runtime.db, runtime.outbox, settings), outbox=runtime.outbox
    )

    scanner = StuckOrderScanner(runtime.db, runtime.outbox, settings)
    ctx.scanner = scanner
    changes = OrderChanges(
        settings.database_url.get_secret_value(),
        max_waiters=settings.order_wait_max_waiters,
        server_settings=server_settings(
            statement_timeout_ms=settings.db_statement_timeout_ms,
            lock_timeout_ms=settings.db_lock_timeout_ms,
            idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout_ms,
        ),
    )
    ctx.changes = changes

    runtime.loops.add(scanner.loop)
    runtime.loops.add(idem.purge_loop(runtime.db, settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(), httpx.AsyncClient() as http:
            ctx.http = http
            changes.start()
            try:
                yield
            finally:
                # before the runtime disposes of the database: woken waiters read the order once more
                await changes.stop()

    app = runtime.http_app("Handshake order service", lifespan=lifespan)
    app.state.scanner = scanner
    app.state.changes = changes
    if settings.rate_limits_enabled:
        # outermost: a request over its rate is refused before the body is read
        app.add_middleware(RateLimits, **abuse_limits(settings))
    app.include_router(build_router(ctx))
    return app
