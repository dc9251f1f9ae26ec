"""Composition root of the payment service: settings, database, broker, consumers, relay, Stripe, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from handshake_payment import SERVICE, idempotency
from handshake_payment.api import PaymentContext, build_router
from handshake_payment.db import messaging
from handshake_payment.handlers import PaymentHandlers
from handshake_payment.reconciliation import Reconciler, run_retention
from handshake_payment.settings import PaymentSettings, get_settings
from handshake_payment.stripe_gateway import StripeGateway
from handshake_shared.body_limit import BodySizeLimit
from handshake_shared.events import ORDER_EVENTS, PROVIDER_EVENTS
from handshake_shared.http import InternalListener, install_problem_handlers, ops_router
from handshake_shared.logging import configure_logging
from handshake_shared.runtime import Runtime


def create_app(settings: PaymentSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(SERVICE, settings.log_level)
    # the SDK logs whole response bodies at DEBUG, client secrets included; its INFO lines are not JSON
    for chatty in ("stripe", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    runtime = Runtime(service=SERVICE, settings=settings, tables=messaging)
    gateway = StripeGateway(settings)
    handlers = PaymentHandlers(runtime.db, runtime.outbox, gateway, settings)
    runtime.consume(ORDER_EVENTS, group="payment.order-events", handlers=handlers.order_handlers())
    runtime.consume(PROVIDER_EVENTS, group="payment.provider-events", handlers=handlers.provider_handlers())
    reconciler = Reconciler(runtime.db, handlers, gateway, settings)
    runtime.retention.add(run_retention(settings))
    runtime.retention.add(idempotency.retention(settings))
    ctx = PaymentContext(db=runtime.db, settings=settings, gateway=gateway, reconciler=reconciler)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with runtime.running():
                task = None
                if settings.reconciliation_interval_seconds > 0:
                    task = asyncio.create_task(reconciler.run_forever(), name="payment-reconciliation")
                try:
                    yield
                finally:
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
        finally:
            await gateway.aclose()

    app = FastAPI(title="Handshake payment service", version="1", lifespan=lifespan)
    app.state.runtime = runtime
    app.state.handlers = handlers
    app.state.gateway = gateway
    app.state.reconciler = reconciler
    install_problem_handlers(app)
    app.add_middleware(InternalListener, internal_port=settings.internal_http_port)
    app.add_middleware(BodySizeLimit, max_bytes=settings.http_max_body_bytes)
    app.include_router(ops_router(runtime.readiness_checks()))
    app.include_router(runtime.outbox_admin_router())
    app.include_router(runtime.dead_letter_admin_router())
    app.include_router(build_router(ctx))
    return app
