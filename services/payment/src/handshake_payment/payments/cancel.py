"""order.cancelled / order.expired: no attempt of the order may take money any more.

  1. in its own transaction under the order lock: attempts still `creating` without an intent are
     cancelled, so no handler creates one later (the creation lease requires `creating`) and a handler
     already calling Stripe cancels what it gets (intents.py); every attempt whose intent may still be open
     gets its cancel recorded, with why the order closed (recovery point cancel_point = requested);
  2. with no transaction of ours open, for each of those: its intent is cancelled at the provider if Stripe
     still allows it (recovery point closed_at_provider). An intent that was paid meanwhile is not
     cancelled: it is a success like any other (holding.py; a late payment is the order's business). One
     still processing stays at `requested`: reconciliation asks again until it ends;
  3. in the consumer's transaction under the order lock: the cancellations and successes, with their facts;
     an attempt that reaches succeeded, cancelled or capture_failed has its cancel finished.

Steps 2 and 3 run from each attempt's point, for the consumer and for reconciliation (finish) alike:
a redelivery finds the attempts cancelled and does nothing; a run after a crash in 2 or 3 resumes each
attempt where it stopped."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

import stripe
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.domain import ledger as L
from handshake_payment.domain.ledger import Settled
from handshake_payment.domain.recovery import CancelPoint
from handshake_payment.payments.holding import Holding, Remedy, settled_from_intent
from handshake_payment.phases import Phase, Phases
from handshake_payment.publisher import EventPublisher
from handshake_payment.store import attempts as repo
from handshake_payment.store import ledger as ledger_store
from handshake_payment.stripe_gateway import StripeGateway
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import order as o

log = structlog.get_logger("payment")


@dataclass(frozen=True)
class _Closing:
    attempt: repo.AttemptRow
    point: str  # the row's cancel_point
    intent: stripe.PaymentIntent | None = None  # as the provider answered the cancel


@dataclass(frozen=True)
class _Closed:
    attempt: repo.AttemptRow
    status: str  # the intent's: canceled, succeeded, or still settling (nothing to record yet)
    paid: Settled | None = None
    remedy: Remedy = field(default_factory=Remedy)


class Cancel:
    def __init__(self, db: Database, publisher: EventPublisher, gateway: StripeGateway, holding: Holding) -> None:
        self.db = db
        self.publisher = publisher
        self.gateway = gateway
        self.holding = holding
        # step 2 from the attempt's cancel_point on; step 1 writes the first point
        self.closing = Phases[_Closing](list(CancelPoint), Phase(CancelPoint.CLOSED_AT_PROVIDER, self._closed))

    async def on_order_closed(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderStateChanged) -> None:
        why = "order_expired" if isinstance(p, o.OrderExpired) else "order_cancelled"
        closed = [
            await self.prepare(attempt, event) for attempt in await self._record(p.order_id, why, p.reason, event)
        ]
        for c in closed:
            await self.apply(conn, event, c)

    async def finish(self, attempt: repo.AttemptRow, cause: CloudEvent) -> None:
        """A cancel left half-way (reconciliation finds its point not finished): steps 2 and 3 from there."""
        closed = await self.prepare(attempt, cause)
        async with self.db.transaction() as tx:
            await self.apply(tx, cause, closed)

    async def _record(self, order_id: uuid.UUID, why: str, reason: str, event: CloudEvent) -> list[repo.AttemptRow]:
        """Step 1: its own transaction, so the cancel is visible to creators before any provider call. The
        attempts whose intent may still be open, as now recorded."""
        async with self.db.transaction() as tx:
            ledger = await ledger_store.load(tx, order_id)
            decision = L.close_order(ledger, why, reason)
            await ledger_store.apply(tx, ledger, decision, event, self.publisher)
            open_ = [await repo.get(tx, call.subject) for call in decision.calls]
        for _ in decision.moves:
            metrics.ORDER_CLOSE_ATTEMPTS.labels("never_created").inc()
        return [a for a in open_ if a is not None]

    async def prepare(self, attempt: repo.AttemptRow, cause: CloudEvent) -> _Closed:
        """Step 2 from the attempt's point on, no transaction of ours open; for money found taken, the
        duplicate check every success gets (holding.py)."""
        assert attempt.cancel_point is not None and attempt.provider_intent_id is not None
        done = await self.closing.prepare(_Closing(attempt, attempt.cancel_point), _point)
        intent = done.intent or await self.gateway.retrieve_intent(attempt.provider_intent_id)
        if intent.status != "succeeded":
            return _Closed(attempt, intent.status)
        why = (attempt.cancel_code or "order_closed").replace("_", " ")
        paid = settled_from_intent(intent.to_dict(), f"paid at the provider before the {why}")
        return _Closed(attempt, intent.status, paid, await self.holding.prepare(attempt.id, paid, cause))

    async def apply(self, conn: AsyncConnection, event: CloudEvent, closed: _Closed) -> None:
        """Step 3, in the caller's transaction: the cancellation or the success, which finishes the point."""
        attempt = closed.attempt
        if closed.paid is not None:
            await self.holding.apply(conn, event, attempt.id, closed.paid, closed.remedy)
        elif closed.status == "canceled":
            assert attempt.cancel_code is not None
            ledger = await ledger_store.load(conn, attempt.order_id)
            decision = L.intent_cancelled(ledger, attempt.id, attempt.cancel_code, attempt.cancel_reason or "")
            await ledger_store.apply(conn, ledger, decision, event, self.publisher)

    async def _closed(self, c: _Closing) -> _Closing:
        """requested -> closed_at_provider: cancelled there, or found paid. Processing: Stripe cannot cancel
        it and its webhook says how it ends; the point stays, and reconciliation asks again."""
        attempt = c.attempt
        assert attempt.provider_intent_id is not None
        intent = await self.gateway.close_intent(attempt.provider_intent_id, idempotency_key=L.cancel_key(attempt.id))
        if intent.status == "canceled":
            metrics.ORDER_CLOSE_ATTEMPTS.labels("canceled").inc()
        elif intent.status == "succeeded":
            metrics.ORDER_CLOSE_ATTEMPTS.labels("paid").inc()
            log.warning("payment landed before the order closed", attempt_id=str(attempt.id), why=attempt.cancel_code)
        else:
            metrics.ORDER_CLOSE_ATTEMPTS.labels("processing").inc()
            log.warning(
                "payment still settling when the order closed", attempt_id=str(attempt.id), status=intent.status
            )
            return replace(c, intent=intent)
        async with self.db.transaction() as tx:
            await repo.advance_point(tx, attempt.id, "cancel_point", CancelPoint.CLOSED_AT_PROVIDER)
        return replace(c, point=CancelPoint.CLOSED_AT_PROVIDER, intent=intent)


def _point(c: _Closing) -> str:
    return c.point
