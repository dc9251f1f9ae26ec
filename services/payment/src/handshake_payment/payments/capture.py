"""Manual capture: order.capture_requested captures the authorized attempt's PaymentIntent.

  1. in its own transaction under the order lock: the request and its amount on the attempt, recovery point
     capture_point = requested (a request redelivered, or another while this one is open, finds it);
  2. with no transaction of ours open: the provider is asked first what is true (retrieve), so an intent
     already captured is only recorded; else the capture, under the attempt's capture key. A capture the
     provider refuses releases the authorization. Recovery point settled_at_provider, written with the
     refusal's code when there is one;
  3. in the consumer's transaction: a capture that went through is a success like any other (holding.py),
     so a later payment_intent.succeeded webhook is a refused duplicate transition; a refused one ends the
     attempt capture_failed. Leaving `authorized` finishes the capture's point.

Steps 2 and 3 run from the row's point, for the consumer and for reconciliation (finish) alike: a capture
left at `requested` is asked of the provider again under the same key (found captured if it was), one left
at `settled_at_provider` is only looked at and recorded."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import stripe
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.domain import ledger as L
from handshake_payment.domain.ledger import Settled
from handshake_payment.domain.recovery import CapturePoint
from handshake_payment.payments.holding import Holding, Remedy, settled_from_intent
from handshake_payment.phases import Phase, Phases
from handshake_payment.publisher import EventPublisher
from handshake_payment.store import attempts as repo
from handshake_payment.store import ledger as ledger_store
from handshake_payment.stripe_gateway import Refusal, StripeGateway, is_permanent, refusal_of
from handshake_shared.consumer import PoisonMessage
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import order as o
from handshake_shared.money import CurrencyError, check_currency

log = structlog.get_logger("payment")


class CaptureNotSettled(Exception):
    """The provider is still settling the intent; the consumer retries."""


@dataclass(frozen=True)
class _Capturing:
    attempt: repo.AttemptRow
    point: str  # the row's capture_point
    outcome: Settled | Refusal | None = None  # captured (or found captured), or refused and released


@dataclass(frozen=True)
class _Captured:
    attempt: repo.AttemptRow
    outcome: Settled | Refusal
    remedy: Remedy = field(default_factory=Remedy)


class Capture:
    def __init__(self, db: Database, publisher: EventPublisher, gateway: StripeGateway, holding: Holding) -> None:
        self.db = db
        self.publisher = publisher
        self.gateway = gateway
        self.holding = holding
        # step 2 from the row's capture_point on; step 1 writes the first point
        self.capturing = Phases[_Capturing](
            list(CapturePoint), Phase(CapturePoint.SETTLED_AT_PROVIDER, self._settled_at_provider)
        )

    async def on_capture_requested(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderCaptureRequested) -> None:
        attempt = await self._attempt_of(p)
        requested: repo.AttemptRow | None = None
        async with self.db.transaction() as tx:  # step 1
            ledger = await ledger_store.load(tx, attempt.order_id)
            decision = L.capture(ledger, attempt.id, p.amount)
            if decision.outcome == "poison":
                raise PoisonMessage(decision.detail)
            if decision.calls:
                await ledger_store.apply(tx, ledger, decision, event, self.publisher)
                requested = await repo.get(tx, attempt.id)
        if decision.outcome == "not_capturable":
            # the authorization was released (expired at the provider, or a second attempt's): say so, with
            # the request's inbox row
            metrics.CAPTURES.labels("not_capturable").inc()
            await ledger_store.apply(conn, ledger, decision, event, self.publisher)
            return
        if not decision.calls:
            return  # answered before: payment.succeeded or payment.capture_failed is already out
        assert requested is not None
        await self.apply(conn, event, await self.prepare(requested, event))

    async def finish(self, attempt: repo.AttemptRow, cause: CloudEvent) -> None:
        """A capture left half-way (reconciliation finds its point not finished): steps 2 and 3 from there."""
        captured = await self.prepare(attempt, cause)
        async with self.db.transaction() as tx:
            await self.apply(tx, cause, captured)

    async def prepare(self, attempt: repo.AttemptRow, cause: CloudEvent) -> _Captured:
        """Step 2 from the row's point on, no transaction of ours open; then, for money taken, the duplicate
        check every success gets (holding.py)."""
        assert attempt.capture_point is not None
        done = await self.capturing.prepare(_Capturing(attempt, attempt.capture_point), _point)
        outcome = done.outcome if done.outcome is not None else await self._found_at_provider(attempt)
        if isinstance(outcome, Refusal):
            return _Captured(attempt, outcome)
        return _Captured(attempt, outcome, await self.holding.prepare(attempt.id, outcome, cause))

    async def apply(self, conn: AsyncConnection, event: CloudEvent, captured: _Captured) -> None:
        """Step 3, in the caller's transaction: the capture's outcome, which finishes its point."""
        if isinstance(captured.outcome, Settled):
            await self.holding.apply(conn, event, captured.attempt.id, captured.outcome, captured.remedy)
            return
        ledger = await ledger_store.load(conn, captured.attempt.order_id)
        refusal = captured.outcome
        refused = L.capture_refused(ledger, captured.attempt.id, refusal.code, refusal.message)
        await ledger_store.apply(conn, ledger, refused, event, self.publisher)

    async def _settled_at_provider(self, c: _Capturing) -> _Capturing:
        """requested -> settled_at_provider: captured, or refused with the authorization released."""
        outcome = await self._capture(ledger_store.attempt_view(c.attempt))
        kept: dict[str, str | None] = {}  # a refusal's reason goes with the point: the released intent lost it
        if isinstance(outcome, Refusal):
            kept = {"failure_code": outcome.code or L.CAPTURE_REFUSED, "failure_message": outcome.message}
        async with self.db.transaction() as tx:
            await repo.advance_point(tx, c.attempt.id, "capture_point", CapturePoint.SETTLED_AT_PROVIDER, **kept)
        return replace(c, point=CapturePoint.SETTLED_AT_PROVIDER, outcome=outcome)

    async def _found_at_provider(self, attempt: repo.AttemptRow) -> Settled | Refusal:
        """A capture settled at the provider before this run: what it did, as the provider and the row say."""
        assert attempt.provider_intent_id is not None
        intent = await self.gateway.retrieve_intent(attempt.provider_intent_id)
        if intent.status == "succeeded":
            return settled_from_intent(intent.to_dict(), "found captured at the provider", attempt.capture_amount)
        if intent.status != "canceled":
            raise CaptureNotSettled(f"payment intent {intent.id} is {intent.status}")
        return Refusal(code=attempt.failure_code or "intent_canceled", message=attempt.failure_message)

    async def _attempt_of(self, p: o.OrderCaptureRequested) -> repo.AttemptRow:
        try:
            currency = check_currency(p.currency)
        except CurrencyError as exc:
            raise PoisonMessage(f"unusable capture request: {exc}") from None
        async with self.db.read() as c:
            attempt = await repo.get(c, p.attempt_id)
        if attempt is None or attempt.order_id != p.order_id or attempt.provider_intent_id != p.payment_intent_id:
            raise PoisonMessage(f"capture request names attempt {p.attempt_id} / {p.payment_intent_id} we do not hold")
        if currency != attempt.currency or p.amount <= 0:
            raise PoisonMessage(
                f"capture of {p.amount} {currency} for an attempt of {attempt.amount} {attempt.currency}"
            )
        return attempt

    async def _capture(self, attempt: L.Attempt) -> Settled | Refusal:
        """The provider calls, no transaction open: captured (or found captured), else refused with the
        authorization released."""
        intent_id = attempt.intent_id
        call = L.capture_call(attempt)
        assert intent_id is not None and call.amount is not None
        amount = call.amount
        intent = await self.gateway.retrieve_intent(intent_id)
        if intent.status == "succeeded":
            metrics.CAPTURES.labels("already_captured").inc()
            return settled_from_intent(intent.to_dict(), "found captured at the provider", amount)
        if intent.status == "requires_capture":
            try:
                captured = await self.gateway.capture_intent(
                    intent_id, amount=amount, idempotency_key=call.idempotency_key
                )
            except stripe.StripeError as exc:
                if not is_permanent(exc):
                    raise
                refusal = refusal_of(exc)
            else:
                metrics.CAPTURES.labels("captured").inc()
                log.info("payment captured", attempt_id=str(attempt.id), payment_intent_id=intent_id, amount=amount)
                return settled_from_intent(captured.to_dict(), "captured on the order's request", amount)
        else:
            refusal = Refusal(code=f"intent_{intent.status}", message=f"the payment intent is {intent.status}")
        # release what is still held, unless the money was taken after all
        release = L.release_authorization(attempt).calls[0]
        current = await self.gateway.close_intent(intent_id, idempotency_key=release.idempotency_key)
        if current.status == "succeeded":
            metrics.CAPTURES.labels("already_captured").inc()
            return settled_from_intent(current.to_dict(), "found captured at the provider", amount)
        if current.status != "canceled":
            raise CaptureNotSettled(f"payment intent {intent_id} is {current.status}")
        metrics.CAPTURES.labels("refused").inc()
        log.warning("capture refused, authorization released", attempt_id=str(attempt.id), code=refusal.code)
        return refusal


def _point(c: _Capturing) -> str:
    return c.point
