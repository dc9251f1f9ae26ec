"""Composition root of the order service: settings, database, broker, consumers, relay, HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from handshake_order import SERVICE
from handshake_order.api import OrderContext, build_router
from handshake_order.checkout import Checkout
from handshake_order.db import messaging
from handshake_order.handlers import OrderSaga
from handshake_order.settings import OrderSettings, get_settings
from handshake_shared.events import INVENTORY_EVENTS, PAYMENT_EVENTS
from handshake_shared.http import install_problem_handlers, ops_router
from handshake_shared.logging import configure_logging
from handshake_shared.runtime import Runtime


def create_app(settings: OrderSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(SERVICE, settings.log_level)
    runtime = Runtime(service=SERVICE, settings=settings, tables=messaging)
    saga = OrderSaga(runtime.outbox)
    runtime.consume(INVENTORY_EVENTS, group="order.inventory-events", handlers=saga.inventory_handlers())
    runtime.consume(PAYMENT_EVENTS, group="order.payment-events", handlers=saga.payment_handlers())
    ctx = OrderContext(db=runtime.db, settings=settings, checkout=Checkout(runtime.db, runtime.outbox, settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(), httpx.AsyncClient() as http:
            ctx.http = http
            yield

    app = FastAPI(title="Handshake order service", version="1", lifespan=lifespan)
    app.state.runtime = runtime
    install_problem_handlers(app)
    app.include_router(ops_router(runtime.readiness_checks()))
    app.include_router(build_router(ctx))
    return app
