"""The payment side of the saga.

order.payment_requested runs in explicit phases, each ending at a recovery point that a redelivery resumes
from (the rocket-rides-atomic idea):

  1. the attempt row, committed in its own transaction, keyed by the request id;
  2. the Stripe PaymentIntent, created with an idempotency key derived from the attempt id while no
     transaction of ours holds or writes the attempt (only the consumer's inbox claim is open: the shared
     consumer begins it before any handler runs), its id committed at once in its own transaction;
  3. requires_payment + payment.intent_created, in the consumer's transaction with the inbox row.

A crash after 1 creates the intent for the same attempt; after 2 it only announces the stored intent.
Provider facts (provider.stripe.event) move the attempt through the lifecycle table and are announced
in the consumer's transaction."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import stripe
import structlog
from prometheus_client import Counter
from sqlalchemy import update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import repository as repo
from handshake_payment.db import payment_attempts
from handshake_payment.domain.attempts import PROVIDER_EVENT_STATES
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.intents import intent_facts
from handshake_payment.settings import PaymentSettings
from handshake_payment.stripe_gateway import StripeGateway, is_permanent
from handshake_shared.consumer import Handler, PoisonMessage
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import PAYMENT_EVENTS
from handshake_shared.events import order as o
from handshake_shared.events import payment as pay
from handshake_shared.events import provider as prov
from handshake_shared.money import CurrencyError, check_currency
from handshake_shared.outbox import Outbox

log = structlog.get_logger("payment")

PROVIDER_FACTS = Counter(
    "handshake_payment_provider_events_total",
    "Provider events by Stripe type and outcome (applied, refused, unmatched, ignored)",
    ["type", "outcome"],
)
LOST_LEASES = Counter(
    "handshake_payment_intent_lease_lost_total",
    "PaymentIntents created after another handler had already stored one for the attempt (provider ignored the key)",
)

LEASE_POLL_SECONDS = 0.25


class AttemptBusy(Exception):
    """Another handler holds the attempt's intent-creation lease; the consumer retries later."""


@dataclass(frozen=True)
class Refusal:
    """Stripe refused to create the intent (amount too small, currency not enabled, ...): final."""

    code: str | None
    message: str | None


def idempotency_key(attempt_id: uuid.UUID) -> str:
    return f"handshake-attempt-{attempt_id}-create-intent"


class PaymentHandlers:
    def __init__(self, db: Database, outbox: Outbox, gateway: StripeGateway, settings: PaymentSettings) -> None:
        self.db = db
        self.outbox = outbox
        self.gateway = gateway
        self.lease_seconds = settings.intent_creation_lease_seconds

    async def emit(self, conn: AsyncConnection, type: str, order_id: str, data: Any, cause: CloudEvent) -> None:
        await self.outbox.emit(conn, topic=PAYMENT_EVENTS, type=type, order_id=order_id, data=data, cause=cause)

    # -- order.events.v1 ------------------------------------------------------------------------

    async def on_payment_requested(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderPaymentRequested) -> None:
        try:
            order_id = uuid.UUID(p.order_id)
            currency = check_currency(p.currency)
        except (ValueError, CurrencyError) as exc:
            raise PoisonMessage(f"unusable payment request: {exc}") from None
        if p.amount < 0:
            raise PoisonMessage(f"negative amount {p.amount}")

        attempt = await self.record_attempt(event, p, order_id, currency)
        if (attempt.order_id, attempt.amount, attempt.currency) != (order_id, p.amount, currency):
            raise PoisonMessage(
                f"request {p.request_id} was {attempt.amount} {attempt.currency} for order {attempt.order_id}, "
                f"now {p.amount} {currency} for order {order_id}"
            )
        refusal: Refusal | None = None
        if attempt.state == A.CREATING and attempt.provider_intent_id is None:
            attempt, refusal = await self.create_intent(attempt)
        await self.announce_intent(conn, event, attempt.id, refusal)

    async def record_attempt(
        self, event: CloudEvent, p: o.OrderPaymentRequested, order_id: uuid.UUID, currency: str
    ) -> Row[Any]:
        """Phase 1 -> recovery point 1: the attempt exists, whatever happens next."""
        async with self.db.transaction() as tx:
            await repo.insert_attempt(
                tx, order_id=order_id, request_id=p.request_id, amount=p.amount, currency=currency,
                event_id=str(event.id),
            )  # fmt: skip
            attempt = await repo.by_request(tx, p.request_id)
        assert attempt is not None
        return attempt

    async def create_intent(self, attempt: Row[Any]) -> tuple[Row[Any], Refusal | None]:
        """Phase 2 -> recovery point 2. The lease is taken and the intent id stored in short transactions of
        their own; none is open on the attempt while Stripe is called."""
        if not await self._take_lease(attempt.id):
            async with self.db.engine.connect() as c:
                current = await repo.get(c, attempt.id)
            assert current is not None
            return current, None  # another handler stored the intent while we waited
        try:
            intent = await self.gateway.create_intent(
                attempt_id=str(attempt.id), order_id=str(attempt.order_id), amount=attempt.amount,
                currency=attempt.currency, idempotency_key=idempotency_key(attempt.id),
            )  # fmt: skip
        except stripe.StripeError as exc:
            await self._release_lease(attempt.id)
            if not is_permanent(exc):
                raise
            log.warning("provider refused the payment intent", attempt_id=str(attempt.id), code=exc.code)
            return attempt, Refusal(code=exc.code, message=exc.user_message or str(exc))
        except BaseException:
            await self._release_lease(attempt.id)
            raise
        async with self.db.transaction() as tx:
            stored = await repo.store_intent(tx, attempt.id, intent.id)
            current = await repo.get(tx, attempt.id)
        assert current is not None
        if not stored:
            # only when our lease expired mid-call and another handler stored its own intent: ours has no
            # client secret handed out, so it can never be paid
            LOST_LEASES.inc()
            log.error("second payment intent for one attempt", attempt_id=str(attempt.id), orphan_intent=intent.id)
        else:
            log.info("payment intent created", attempt_id=str(attempt.id), payment_intent_id=intent.id)
        return current, None

    async def _take_lease(self, attempt_id: uuid.UUID) -> bool:
        """True once this handler may call the provider; False when another handler stored the intent.
        Waits at most one lease period for a holder that may have crashed mid-call."""
        deadline = asyncio.get_running_loop().time() + self.lease_seconds + 1.0
        while True:
            async with self.db.transaction() as tx:
                if await repo.lease_intent_creation(tx, attempt_id, self.lease_seconds):
                    return True
                current = await repo.get(tx, attempt_id)
            if current is None or current.provider_intent_id is not None or current.state != A.CREATING:
                return False
            if asyncio.get_running_loop().time() > deadline:
                raise AttemptBusy(f"attempt {attempt_id} intent creation is leased by another handler")
            await asyncio.sleep(LEASE_POLL_SECONDS)

    async def _release_lease(self, attempt_id: uuid.UUID) -> None:
        try:
            async with self.db.transaction() as tx:
                await repo.release_lease(tx, attempt_id)
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            log.warning("could not release intent lease", attempt_id=str(attempt_id), error=repr(exc))

    async def announce_intent(
        self, conn: AsyncConnection, event: CloudEvent, attempt_id: uuid.UUID, refusal: Refusal | None
    ) -> None:
        """Phase 3, in the consumer's transaction: an attempt already past `creating` was announced before."""
        attempt = await repo.get(conn, attempt_id, lock=True)
        assert attempt is not None
        if attempt.state != A.CREATING:
            return
        order_id = str(attempt.order_id)
        if refusal is not None:
            if await repo.transition(
                conn, attempt, A.FAILED, reason=f"provider refused the payment intent: {refusal.code or 'unknown'}",
                event_id=str(event.id), failure_code=refusal.code, failure_message=refusal.message,
            ):  # fmt: skip
                # no intent exists, so the intent id is empty (the contract has no optional field for it)
                await self.emit(
                    conn, "payment.failed", order_id,
                    pay.PaymentFailed(order_id=order_id, attempt_id=str(attempt.id), payment_intent_id="",
                                      failure_code=refusal.code, failure_message=refusal.message),
                    event,
                )  # fmt: skip
            return
        if attempt.provider_intent_id is None:
            raise AttemptBusy(f"attempt {attempt.id} has no payment intent yet")
        announced = await repo.transition(
            conn, attempt, A.REQUIRES_PAYMENT, reason="payment intent created", event_id=str(event.id)
        )
        if announced:
            await self.emit(
                conn, "payment.intent_created", order_id,
                pay.PaymentIntentCreated(order_id=order_id, attempt_id=str(attempt.id),
                                         payment_intent_id=attempt.provider_intent_id, amount=attempt.amount,
                                         currency=attempt.currency),
                event,
            )  # fmt: skip

    # -- provider.events.v1 ---------------------------------------------------------------------

    async def on_provider_event(self, conn: AsyncConnection, event: CloudEvent, p: prov.ProviderStripeEvent) -> None:
        target = PROVIDER_EVENT_STATES.get(p.provider_type)
        if target is None or p.object_type not in (None, "payment_intent"):
            PROVIDER_FACTS.labels(p.provider_type, "ignored").inc()
            return
        facts = intent_facts(p.object)
        intent_id = p.object_id or p.object.get("id")
        if not intent_id:
            raise PoisonMessage(f"{p.provider_type} {p.provider_event_id} names no payment intent")
        attempt = await self._attempt_for_intent(conn, intent_id, p.attempt_id or facts.attempt_id)
        if attempt is None:
            PROVIDER_FACTS.labels(p.provider_type, "unmatched").inc()
            log.warning(
                "provider event for an unknown payment intent", provider_event_id=p.provider_event_id,
                provider_type=p.provider_type, payment_intent_id=intent_id,
            )  # fmt: skip
            return
        columns: dict[str, Any] = {}
        if target in (A.FAILED, A.CANCELED):
            columns = {"failure_code": facts.failure_code, "failure_message": facts.failure_message}
        amount = facts.amount if facts.amount is not None else p.amount
        currency = facts.currency or (p.currency.upper() if p.currency else None)
        if target == A.SUCCEEDED and (amount is None or currency is None):
            raise PoisonMessage(f"{p.provider_event_id}: a success without amount or currency")
        applied = await repo.transition(
            conn, attempt, target, reason=f"stripe {p.provider_type}", event_id=str(event.id),
            provider_event_id=p.provider_event_id, **columns,
        )  # fmt: skip
        PROVIDER_FACTS.labels(p.provider_type, "applied" if applied else "refused").inc()
        if not applied:
            return
        order_id, attempt_id = str(attempt.order_id), str(attempt.id)
        if target == A.SUCCEEDED:
            assert amount is not None and currency is not None
            if (amount, currency) != (attempt.amount, attempt.currency):
                # reported as charged; the order service compares with its snapshot and flags the order
                log.warning(
                    "charged amount differs from the attempt", attempt_id=attempt_id, charged=amount,
                    charged_currency=currency, requested=attempt.amount, requested_currency=attempt.currency,
                )  # fmt: skip
            await self.emit(
                conn, "payment.succeeded", order_id,
                pay.PaymentSucceeded(order_id=order_id, attempt_id=attempt_id, payment_intent_id=intent_id,
                                     amount=amount, currency=currency),
                event,
            )  # fmt: skip
        elif target in (A.FAILED, A.CANCELED):
            await self.emit(
                conn, "payment.failed" if target == A.FAILED else "payment.canceled", order_id,
                pay.PaymentFailed(order_id=order_id, attempt_id=attempt_id, payment_intent_id=intent_id,
                                  failure_code=facts.failure_code, failure_message=facts.failure_message),
                event,
            )  # fmt: skip

    async def _attempt_for_intent(
        self, conn: AsyncConnection, intent_id: str, attempt_id: str | None
    ) -> Row[Any] | None:
        attempt = await repo.lock_by_intent(conn, intent_id)
        if attempt is not None or not attempt_id:
            return attempt
        # the intent's metadata names the attempt: the process died between creating the intent and
        # storing its id (recovery point 2 never reached), so adopt it now
        try:
            attempt = await repo.get(conn, uuid.UUID(attempt_id), lock=True)
        except ValueError:
            return None
        if attempt is None:
            return None
        if attempt.provider_intent_id is not None:
            log.error("event for a second intent of one attempt", attempt_id=attempt_id, payment_intent_id=intent_id,
                      stored_intent_id=attempt.provider_intent_id)  # fmt: skip
            return None
        await conn.execute(
            update(payment_attempts).where(payment_attempts.c.id == attempt.id).values(provider_intent_id=intent_id)
        )
        return await repo.get(conn, attempt.id)

    def order_handlers(self) -> dict[str, Handler]:
        return {"order.payment_requested": self.on_payment_requested}

    def provider_handlers(self) -> dict[str, Handler]:
        return {"provider.stripe.event": self.on_provider_event}
