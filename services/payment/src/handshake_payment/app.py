"""Composition root of the payment service: settings, database, broker, consumers, relay, Stripe, HTTP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from handshake_payment import SERVICE, idempotency
from handshake_payment.api import PaymentContext, build_router
from handshake_payment.db import messaging
from handshake_payment.payments.cancel import Cancel
from handshake_payment.payments.capture import Capture
from handshake_payment.payments.holding import Holding
from handshake_payment.payments.intents import IntentCreation
from handshake_payment.provider_events.disputes import Disputes
from handshake_payment.provider_events.intake import ProviderEventIntake
from handshake_payment.provider_events.proof import ProviderProof
from handshake_payment.provider_events.refunds import ProviderRefunds
from handshake_payment.publisher import EventPublisher
from handshake_payment.reconciliation.reconciler import Reconciler, run_retention
from handshake_payment.refunds.requests import Refunds
from handshake_payment.settings import PaymentSettings, get_settings
from handshake_payment.stripe_gateway import StripeGateway
from handshake_shared.consumer import Handler
from handshake_shared.db import Database
from handshake_shared.events import ORDER_EVENTS, PROVIDER_EVENTS
from handshake_shared.events import order as o
from handshake_shared.events import provider as prov
from handshake_shared.events.base import Payload
from handshake_shared.logging import configure_logging
from handshake_shared.outbox import Outbox
from handshake_shared.runtime import Runtime


@dataclass(frozen=True)
class PaymentGraph:
    """The service's object graph, built here and nowhere else: the feature packages over the one
    repository layer (store/), each handed what it uses."""

    intents: IntentCreation
    holding: Holding
    capture: Capture
    cancel: Cancel
    refunds: Refunds
    intake: ProviderEventIntake
    reconciler: Reconciler

    @classmethod
    def build(cls, db: Database, outbox: Outbox, gateway: StripeGateway, settings: PaymentSettings) -> PaymentGraph:
        publisher = EventPublisher(outbox)
        lease_seconds = settings.provider_call_lease_seconds
        refunds = Refunds(db, publisher, gateway, lease_seconds)
        holding = Holding(db, publisher, gateway, refunds)
        proof = ProviderProof([s.get_secret_value() for s in settings.stripe_webhook_secrets], gateway)
        intake = ProviderEventIntake(db, publisher, holding, Disputes(db, publisher), ProviderRefunds(publisher), proof)
        # intent creation applies what was parked about its intent once it is stored: a callback, so
        # payments/ does not import provider_events/ (which imports payments.holding)
        intents = IntentCreation(db, publisher, gateway, lease_seconds, after_intent_stored=intake.apply_parked)
        capture = Capture(db, publisher, gateway, holding)
        cancel = Cancel(db, publisher, gateway, holding)
        reconciler = Reconciler(
            db,
            intents=intents,
            capture=capture,
            cancel=cancel,
            holding=holding,
            intake=intake,
            refunds=refunds,
            gateway=gateway,
            settings=settings,
        )
        return cls(
            intents=intents,
            holding=holding,
            capture=capture,
            cancel=cancel,
            refunds=refunds,
            intake=intake,
            reconciler=reconciler,
        )

    def order_handlers(self) -> dict[type[Payload], Handler]:
        return {
            o.OrderPaymentRequested: self.intents.on_payment_requested,
            o.OrderCancelled: self.cancel.on_order_closed,
            o.OrderExpired: self.cancel.on_order_closed,
            o.OrderCaptureRequested: self.capture.on_capture_requested,
            o.OrderRefundRequested: self.refunds.on_refund_requested,
        }

    def provider_handlers(self) -> dict[type[Payload], Handler]:
        return {prov.ProviderStripeEvent: self.intake.on_provider_event}


def create_app(settings: PaymentSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(SERVICE, settings.log_level)
    # the SDK logs whole response bodies at DEBUG, client secrets included; its INFO lines are not JSON
    for chatty in ("stripe", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    runtime = Runtime(service=SERVICE, settings=settings, tables=messaging)
    gateway = StripeGateway(settings)
    graph = PaymentGraph.build(runtime.db, runtime.outbox, gateway, settings)
    runtime.consume(ORDER_EVENTS, group="payment.order-events", handlers=graph.order_handlers())
    runtime.consume(PROVIDER_EVENTS, group="payment.provider-events", handlers=graph.provider_handlers())
    reconciler = graph.reconciler
    runtime.retention.add(run_retention(settings))
    runtime.retention.add(idempotency.retention(settings))
    ctx = PaymentContext(db=runtime.db, settings=settings, gateway=gateway, reconciler=reconciler)

    if settings.reconciliation_interval_seconds > 0:
        runtime.loops.add(reconciler.loop)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with runtime.running():
                yield
        finally:
            await gateway.aclose()

    app = runtime.http_app("Handshake payment service", lifespan=lifespan)
    app.state.graph = graph
    app.state.gateway = gateway
    app.state.reconciler = reconciler
    app.include_router(build_router(ctx))
    return app
