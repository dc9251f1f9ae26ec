"""Composition root of webhook-ingest: settings, database, broker (publish only), relay, HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from handshake_shared.logging import configure_logging
from handshake_shared.runtime import Runtime
from handshake_webhook_ingest import SERVICE
from handshake_webhook_ingest.api import IngestContext, build_router
from handshake_webhook_ingest.db import messaging
from handshake_webhook_ingest.gap_scan import GapScanner
from handshake_webhook_ingest.ingest import StripeIngest
from handshake_webhook_ingest.retention import retention_jobs
from handshake_webhook_ingest.settings import WebhookIngestSettings, get_settings


def create_app(settings: WebhookIngestSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(SERVICE, settings.log_level)
    # consumes no topic: the runtime is here for the database, the broker and the outbox relay
    runtime = Runtime(service=SERVICE, settings=settings, tables=messaging)
    # the secrets seal each forwarded delivery, the proof payment checks before it applies the event
    webhook_secrets = [s.get_secret_value() for s in settings.stripe_webhook_secrets]
    ingest = StripeIngest(runtime.db, runtime.outbox, webhook_secrets)
    ctx = IngestContext(db=runtime.db, settings=settings, messaging=messaging, ingest=ingest)
    scanner = GapScanner(runtime.db, ingest, settings)
    runtime.retention.add(*retention_jobs(settings))
    if scanner.enabled:
        runtime.loops.add(scanner.loop)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not scanner.enabled and settings.gap_scan_interval_seconds > 0:
            structlog.get_logger("app").warning(
                "webhook gap scan is off: HANDSHAKE_STRIPE_API_KEY is not set, missed webhooks go unnoticed"
            )
        async with runtime.running():
            yield

    app = runtime.http_app(
        "Handshake webhook-ingest service",
        lifespan=lifespan,
        body_limits={"/webhooks/stripe": settings.webhook_max_body_bytes},
    )
    app.state.gap_scanner = scanner
    app.include_router(build_router(ctx))
    return app
