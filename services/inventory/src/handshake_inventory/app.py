"""Composition root of the inventory service: settings, database, broker, consumer, relay, HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from handshake_inventory import SERVICE
from handshake_inventory.api import InventoryContext, build_router
from handshake_inventory.db import messaging
from handshake_inventory.handlers import InventoryEventHandlers
from handshake_inventory.metrics import gauge_refresher
from handshake_inventory.settings import InventorySettings, get_settings
from handshake_inventory.sweeper import ReservationSweeper
from handshake_shared.events import ORDER_EVENTS
from handshake_shared.logging import configure_logging
from handshake_shared.runtime import Runtime


def create_app(settings: InventorySettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(SERVICE, settings.log_level)
    runtime = Runtime(service=SERVICE, settings=settings, tables=messaging)
    handlers = InventoryEventHandlers(runtime.outbox, settings)
    runtime.consume(ORDER_EVENTS, group="inventory.order-events", handlers=handlers.order_handlers())
    sweeper = ReservationSweeper(
        runtime.db,
        handlers,
        batch_size=settings.expiry_sweep_batch_size,
        interval_seconds=settings.expiry_sweep_interval_seconds,
    )
    runtime.loops.add(sweeper.loop)
    runtime.loops.add(gauge_refresher(runtime.db, settings.gauge_refresh_seconds))
    ctx = InventoryContext(db=runtime.db, settings=settings)

    app = runtime.http_app("Handshake inventory service")
    app.state.handlers = handlers
    app.state.sweeper = sweeper
    app.include_router(build_router(ctx))
    return app
