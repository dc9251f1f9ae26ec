"""Payment test wiring: the real service graph (create_app) against real PostgreSQL and the Stripe emulator.

Handler-level tests drive the service's own EventConsumers directly (inbox, retries and handler in one real
transaction, no broker); the broker test runs the whole app in-process."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from fastapi import FastAPI
from sqlalchemy import select, text

from handshake_payment.app import create_app
from handshake_payment.db import attempt_transitions, payment_attempts, refunds
from handshake_payment.settings import PaymentSettings
from handshake_shared.consumer import EventConsumer, RawMessage
from handshake_shared.envelope import CloudEvent, build_event, parse_event
from handshake_shared.events import ORDER_EVENTS, PROVIDER_EVENTS
from handshake_shared.events.order import (
    OrderCaptureRequested,
    OrderPaymentRequested,
    OrderRefundRequested,
    OrderStateChanged,
)

# test modules are imported by path (importlib mode), so the proxy module is too
_spec = importlib.util.spec_from_file_location("payment_test_faults", Path(__file__).with_name("faults.py"))
assert _spec is not None and _spec.loader is not None
faults_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = faults_module
_spec.loader.exec_module(faults_module)
FaultProxy = faults_module.FaultProxy
dies_after_phases = faults_module.dies_after

_signing_spec = importlib.util.spec_from_file_location(
    "payment_test_provider_signing", Path(__file__).with_name("provider_signing.py")
)
assert _signing_spec is not None and _signing_spec.loader is not None
provider_signing = importlib.util.module_from_spec(_signing_spec)
sys.modules[_signing_spec.name] = provider_signing
_signing_spec.loader.exec_module(provider_signing)


@pytest.fixture
def settings(stack, fresh_database) -> PaymentSettings:
    return PaymentSettings(
        database_url=fresh_database("handshake_payment"),
        kafka_bootstrap_servers=stack.broker.bootstrap_servers,
        kafka_enable_idempotence=False,
        kafka_client_id_suffix="-" + uuid.uuid4().hex[:6],
        outbox_idle_poll_seconds=0.1,
        consumer_initial_backoff_seconds=0.05,
        stripe_api_key=stack.stripe.api_key,
        stripe_api_base=stack.stripe.api_base,
        # provider events are applied only when this secret verifies them (provider_signing.py signs with it)
        stripe_webhook_secrets=[provider_signing.WEBHOOK_SECRET],
        stripe_timeout_seconds=5.0,
        stripe_max_network_retries=1,
        # a run is asked for by the test; everything waiting counts as waiting long enough
        reconciliation_interval_seconds=0,
        reconciliation_pending_after_seconds=0,
    )


@dataclass
class PaymentService:
    """The service graph built by create_app, not started: no broker connection is made."""

    app: FastAPI
    settings: PaymentSettings

    @property
    def db(self):
        return self.app.state.runtime.db

    @property
    def graph(self):
        """The feature objects create_app wired (app.PaymentGraph)."""
        return self.app.state.graph

    def consumer(self, group: str) -> EventConsumer:
        return next(c for c in self.app.state.runtime.consumers if c.name == group)

    async def deliver(self, topic: str, event: CloudEvent) -> str:
        """Deliver one message to the consumer group that reads topic, as the broker would."""
        group = {ORDER_EVENTS: "payment.order-events", PROVIDER_EVENTS: "payment.provider-events"}[topic]
        return await self.consumer(group).handle(
            RawMessage(topic=topic, partition=0, offset=None, key=event.subject.encode(), value=event.to_bytes())
        )

    async def attempts(self, order_id: str) -> list[Any]:
        async with self.db.engine.connect() as conn:
            query = select(payment_attempts).where(payment_attempts.c.order_id == uuid.UUID(order_id))
            return (await conn.execute(query.order_by(payment_attempts.c.created_at))).all()

    async def audit(self, attempt_id: uuid.UUID) -> list[tuple[str | None, str]]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                select(attempt_transitions.c.from_state, attempt_transitions.c.to_state)
                .where(attempt_transitions.c.attempt_id == attempt_id)
                .order_by(attempt_transitions.c.id)
            )
            return [tuple(r) for r in rows]

    async def emitted(self, order_id: str) -> list[CloudEvent]:
        """Events in the outbox for this order, in commit order."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT payload FROM outbox WHERE message_key = :k ORDER BY id"), {"k": order_id}
            )
            return [parse_event(r.payload) for r in rows]

    async def refunds(self, order_id: str) -> list[Any]:
        async with self.db.engine.connect() as conn:
            query = select(refunds).where(refunds.c.order_id == uuid.UUID(order_id))
            return (await conn.execute(query.order_by(refunds.c.created_at))).all()

    async def forget(self, event: CloudEvent) -> None:
        """Delete the inbox row, so the same event is applied again (a lost inbox write, a replay)."""
        async with self.db.transaction() as conn:
            await conn.execute(text("DELETE FROM inbox WHERE event_id = :id"), {"id": event.id})


@pytest.fixture
async def service(settings) -> AsyncIterator[PaymentService]:
    app = create_app(settings)
    yield PaymentService(app, settings)
    await app.state.runtime.db.dispose()
    await app.state.gateway.aclose()


@pytest.fixture
async def manual_service(settings) -> AsyncIterator[PaymentService]:
    """The same service configured for manual capture (HANDSHAKE_CAPTURE_METHOD=manual)."""
    manual = settings.model_copy(update={"capture_method": "manual"})
    app = create_app(manual)
    yield PaymentService(app, manual)
    await app.state.runtime.db.dispose()
    await app.state.gateway.aclose()


@pytest.fixture
async def faults(stack) -> AsyncIterator[Any]:
    """A fault-injecting proxy in front of the Stripe emulator (tests/faults.py)."""
    proxy = await FaultProxy(stack.stripe.api_base).start()
    yield proxy
    await proxy.stop()


def through_faults(settings: PaymentSettings, faults: Any, **more: Any) -> PaymentSettings:
    """Stripe through the fault proxy, with a short client timeout and short consumer backoff (a redelivery
    after an infrastructure failure comes at once)."""
    update = {"stripe_api_base": faults.base, "stripe_timeout_seconds": 1.0, "consumer_max_backoff_seconds": 0.2}
    return settings.model_copy(update={**update, **more})


@pytest.fixture
async def faulty_service(settings, faults) -> AsyncIterator[PaymentService]:
    """The service talking to Stripe through the fault proxy."""
    faulty = through_faults(settings, faults)
    app = create_app(faulty)
    yield PaymentService(app, faulty)
    await app.state.runtime.db.dispose()
    await app.state.gateway.aclose()


@pytest.fixture
async def manual_faulty_service(settings, faults) -> AsyncIterator[PaymentService]:
    """The same for manual capture: authorizations, captures and releases go through the proxy, which counts
    them."""
    manual = through_faults(settings, faults, capture_method="manual")
    app = create_app(manual)
    yield PaymentService(app, manual)
    await app.state.runtime.db.dispose()
    await app.state.gateway.aclose()


@pytest.fixture
def dies_after():
    """dies_after(phases, point): a context in which the process dies once a row of that phase table is at
    `point` (tests/faults.py)."""
    return dies_after_phases


@pytest.fixture
async def http(service) -> AsyncIterator[httpx.AsyncClient]:
    """The service's HTTP surface over ASGI; the routes need the database and Stripe, not the broker."""
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payment") as client:
        yield client


@pytest.fixture
async def internal_http(service) -> AsyncIterator[httpx.AsyncClient]:
    """The service's internal listener (the port only order may reach), over ASGI."""
    transport = httpx.ASGITransport(app=service.app)
    base_url = f"http://payment:{service.settings.internal_http_port}"
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


class Browser:
    """What a customer's browser (Stripe.js) and the Stripe dashboard do, through the real SDK."""

    def __init__(self, api_base: str, api_key: str) -> None:
        self.http = stripe.HTTPXClient(timeout=10)
        self.client = stripe.StripeClient(api_key, base_addresses={"api": api_base}, http_client=self.http)

    async def intents_for(self, order_id: str) -> list[stripe.PaymentIntent]:
        page = await self.client.v1.payment_intents.list_async(params={"limit": 100})
        return [pi async for pi in page.auto_paging_iter() if pi.metadata.to_dict().get("order_id") == order_id]

    async def retrieve(self, intent_id: str) -> stripe.PaymentIntent:
        return await self.client.v1.payment_intents.retrieve_async(intent_id)

    async def pay(self, intent_id: str, card_number: str) -> stripe.PaymentIntent:
        """Attach a card and confirm, as Stripe.js does with the client secret. A decline is not an error
        here: the intent then carries last_payment_error."""
        pm = await self.client.v1.payment_methods.create_async(
            params={"type": "card", "card": {"number": card_number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
        )
        await self.client.v1.payment_intents.update_async(intent_id, params={"payment_method": pm.id})
        with contextlib.suppress(stripe.CardError):
            await self.client.v1.payment_intents.confirm_async(intent_id)
        return await self.retrieve(intent_id)

    async def refunds_of(self, intent_id: str) -> list[stripe.Refund]:
        """Every refund the provider made on this intent: what the customer actually got back."""
        page = await self.client.v1.refunds.list_async(params={"payment_intent": intent_id, "limit": 100})
        return [r async for r in page.auto_paging_iter()]


@pytest.fixture
async def browser(stack) -> AsyncIterator[Browser]:
    b = Browser(stack.stripe.api_base, stack.stripe.api_key)
    yield b
    await b.http.close_async()


def payment_requested(order_id: str, request_id: str, amount: int, currency: str = "EUR") -> CloudEvent:
    return build_event(
        service="order",
        type="order.payment_requested",
        order_id=order_id,
        sequence=2,
        data=OrderPaymentRequested(order_id=order_id, request_id=request_id, amount=amount, currency=currency),
    )


def stripe_event(stripe_type: str, intent: stripe.PaymentIntent) -> CloudEvent:
    """provider.stripe.event as webhook-ingest forwards it: the real PaymentIntent in a delivery signed with
    the endpoint secret (sealed: its client secret travels only inside the proof)."""
    obj = intent.to_dict(for_json=True)
    return provider_signing.forwarded(stripe_type, obj, key=(obj.get("metadata") or {})["order_id"])


def order_closed(order_id: str, type: str = "order.cancelled", reason: str = "cancelled by the customer") -> CloudEvent:
    to_state = "expired" if type == "order.expired" else "cancelled"
    return build_event(
        service="order",
        type=type,
        order_id=order_id,
        sequence=5,
        data=OrderStateChanged(order_id=order_id, from_state="payment_pending", to_state=to_state, reason=reason),
    )


def refund_requested(order_id: str, amount: int, refund_id: str | None = None, currency: str = "EUR") -> CloudEvent:
    return build_event(
        service="order",
        type="order.refund_requested",
        order_id=order_id,
        sequence=7,
        data=OrderRefundRequested(
            order_id=order_id,
            refund_id=refund_id or str(uuid.uuid4()),
            amount=amount,
            currency=currency,
            reason="customer_request",
            requested_by="agent-7",
        ),
    )


def capture_requested(order_id: str, attempt: Any, amount: int | None = None) -> CloudEvent:
    return build_event(
        service="order",
        type="order.capture_requested",
        order_id=order_id,
        sequence=6,
        data=OrderCaptureRequested(
            order_id=order_id,
            attempt_id=str(attempt.id),
            payment_intent_id=attempt.provider_intent_id,
            amount=attempt.amount if amount is None else amount,
            currency=attempt.currency,
        ),
    )


CARD_OK = "4242424242424242"


class Checkout:
    """The usual steps before the behaviour under test: an attempt with its intent, a browser paying it."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser

    async def attempt(self, service: PaymentService, order_id: str, amount: int) -> Any:
        request_id = str(uuid.uuid4())
        assert await service.deliver(ORDER_EVENTS, payment_requested(order_id, request_id, amount)) == "applied"
        async with service.db.engine.connect() as conn:
            query = select(payment_attempts).where(payment_attempts.c.request_id == request_id)
            return (await conn.execute(query)).one()

    async def pay(self, service: PaymentService, attempt: Any, webhook: str | None = None) -> stripe.PaymentIntent:
        """Confirm with a good card; deliver the webhook Stripe then sends (none for manual capture unless
        asked: localstripe never sends amount_capturable_updated)."""
        intent = await self.browser.pay(attempt.provider_intent_id, CARD_OK)
        if webhook is not None:
            assert await service.deliver(PROVIDER_EVENTS, stripe_event(webhook, intent)) == "applied"
        return intent

    async def paid(self, service: PaymentService, amount: int) -> tuple[str, Any, stripe.PaymentIntent]:
        order_id = str(uuid.uuid4())
        attempt = await self.attempt(service, order_id, amount)
        intent = await self.pay(service, attempt, "payment_intent.succeeded")
        assert intent.status == "succeeded"
        return order_id, attempt, intent


@pytest.fixture
def checkout(browser) -> Checkout:
    return Checkout(browser)


@pytest.fixture
def events():
    """Builders for incoming events (test modules cannot import conftest under importlib mode)."""

    class Events:
        requested = staticmethod(payment_requested)
        stripe = staticmethod(stripe_event)
        closed = staticmethod(order_closed)
        refund = staticmethod(refund_requested)
        capture = staticmethod(capture_requested)
        # any Stripe object in a signed delivery: provider(stripe_type, obj, key=..., created=...)
        provider = staticmethod(provider_signing.forwarded)

    return Events
