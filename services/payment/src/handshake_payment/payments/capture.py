"""Manual capture: order.capture_requested captures the authorized attempt's PaymentIntent.

The provider is asked first what is true (retrieve): an intent already captured is only recorded, so a
redelivered request never captures twice. The capture itself carries an idempotency key from the attempt.
A capture the provider refuses releases the authorization and ends the attempt capture_failed; a capture
that went through is a success like any other (holding.py), so a later payment_intent.succeeded
webhook is a refused duplicate transition. No transaction of ours is open during the provider calls."""

from __future__ import annotations

from dataclasses import dataclass, replace

import stripe
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.domain import ledger as L
from handshake_payment.domain.ledger import Settled
from handshake_payment.domain.recovery import FINISHED
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
    attempt: L.Attempt
    call: L.ProviderCall
    event: CloudEvent
    point: str = "authorized"
    outcome: Settled | Refusal | None = None  # captured (or found captured), or refused and released
    remedy: Remedy | None = None


class Capture:
    def __init__(self, db: Database, publisher: EventPublisher, gateway: StripeGateway, holding: Holding) -> None:
        self.db = db
        self.publisher = publisher
        self.gateway = gateway
        self.holding = holding
        # the points are what the provider says of the intent (retrieved first) and the rows: a redelivery
        # runs the table again from the top, and the capture carries its key
        self.capturing = Phases[_Capturing](
            ("authorized", "settled_at_provider", "given_back", FINISHED),
            Phase("settled_at_provider", self._settled_at_provider),
            Phase("given_back", self._given_back),
        )

    async def on_capture_requested(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderCaptureRequested) -> None:
        attempt = await self._attempt_of(p)
        async with self.db.read() as c:
            ledger = await ledger_store.load(c, attempt.order_id, lock=False)
        decision = L.capture(ledger, attempt.id, p.amount)
        if decision.outcome == "poison":
            raise PoisonMessage(decision.detail)
        if decision.outcome == "not_capturable":
            # the authorization was released (expired at the provider, or a second attempt's): say so
            metrics.CAPTURES.labels("not_capturable").inc()
            await ledger_store.apply(conn, ledger, decision, event, self.publisher)
            return
        if not decision.calls:
            return  # answered before: payment.succeeded or payment.capture_failed is already out
        start = _Capturing(ledger.attempt(attempt.id), decision.calls[0], event)
        done = await self.capturing.prepare(start, lambda c: c.point)
        # apply, in the consumer's transaction
        if isinstance(done.outcome, Settled):
            assert done.remedy is not None
            await self.holding.apply(conn, event, attempt.id, done.outcome, done.remedy)
            return
        assert done.outcome is not None
        ledger = await ledger_store.load(conn, attempt.order_id)
        refused = L.capture_refused(ledger, attempt.id, done.outcome.code, done.outcome.message)
        await ledger_store.apply(conn, ledger, refused, event, self.publisher)

    async def _settled_at_provider(self, c: _Capturing) -> _Capturing:
        return replace(c, point="settled_at_provider", outcome=await self._capture(c.attempt, c.call))

    async def _given_back(self, c: _Capturing) -> _Capturing:
        """A capture is a success like any other: a duplicate's money goes back (holding.py)."""
        if not isinstance(c.outcome, Settled):
            return replace(c, point="given_back")
        remedy = await self.holding.prepare(c.attempt.id, c.outcome, c.event)
        return replace(c, point="given_back", remedy=remedy)

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

    async def _capture(self, attempt: L.Attempt, call: L.ProviderCall) -> Settled | Refusal:
        """The provider calls, no transaction open: captured (or found captured), else refused with the
        authorization released."""
        intent_id = attempt.intent_id
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
