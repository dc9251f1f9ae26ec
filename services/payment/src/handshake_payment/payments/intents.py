"""Intent creation: order.payment_requested in explicit phases, each ending at a recovery point that a
redelivery resumes from (the rocket-rides-atomic idea):

  1. the attempt row, committed in its own transaction, keyed by the request id;
  2. the Stripe PaymentIntent, created with an idempotency key derived from the attempt id while no
     transaction of ours holds or writes the attempt (only the consumer's inbox claim is open: the shared
     consumer begins it before any handler runs), its id committed at once in its own transaction;
  3. requires_payment + payment.intent_created, in the consumer's transaction with the inbox row.

A crash after 1 creates the intent for the same attempt; after 2 it only announces the stored intent.
An order cancelled meanwhile cancels the attempt; creation then never starts, or cancels what it made.
Provider events parked before the intent was known are applied right after recovery point 2, through the
callback the composition root passes in (provider_events.intake), so this module does not import it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import stripe
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import leases, metrics
from handshake_payment.domain import ledger as L
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.recovery import AttemptPoint
from handshake_payment.phases import Phase, Phases
from handshake_payment.publisher import EventPublisher
from handshake_payment.store import attempts as repo
from handshake_payment.store import ledger as ledger_store
from handshake_payment.stripe_gateway import Refusal, StripeGateway, is_permanent
from handshake_shared.consumer import PoisonMessage
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import order as o
from handshake_shared.money import CurrencyError, check_currency

log = structlog.get_logger("payment")


class AttemptBusy(Exception):
    """Another handler holds the attempt's intent-creation lease; the consumer retries later."""


@dataclass(frozen=True)
class _Creation:
    attempt: repo.AttemptRow
    refusal: Refusal | None = None  # the provider refused to make the intent
    closed: bool = False  # the order closed meanwhile: nothing to announce


class IntentCreation:
    def __init__(
        self,
        db: Database,
        publisher: EventPublisher,
        gateway: StripeGateway,
        lease_seconds: float,
        after_intent_stored: Callable[[str], Awaitable[int]],
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.gateway = gateway
        self.lease_seconds = lease_seconds
        self.after_intent_stored = after_intent_stored
        self.phases = Phases[_Creation](
            list(AttemptPoint),
            Phase(AttemptPoint.INTENT_STORED, self._intent_stored),
            Phase(AttemptPoint.FINISHED, self._finished),
        )

    async def on_payment_requested(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderPaymentRequested) -> None:
        order_id = p.order_id
        try:
            currency = check_currency(p.currency)
        except CurrencyError as exc:
            raise PoisonMessage(f"unusable payment request: {exc}") from None
        if p.amount < 0:
            raise PoisonMessage(f"negative amount {p.amount}")

        attempt = await self.record_attempt(event, p, order_id, currency)
        if (attempt.order_id, attempt.amount, attempt.currency) != (order_id, p.amount, currency):
            raise PoisonMessage(
                f"request {p.request_id} was {attempt.amount} {attempt.currency} for order {attempt.order_id}, "
                f"now {p.amount} {currency} for order {order_id}"
            )
        prepared = await self.prepare_intent(attempt)
        if prepared is not False:
            await self.announce_intent(conn, event, attempt.id, prepared)

    async def finish(self, attempt: repo.AttemptRow, cause: CloudEvent) -> None:
        """An intent creation left half-way (reconciliation finds its point not finished): its phases from
        the row's point, then phase 3 in a transaction of its own."""
        prepared = await self.prepare_intent(attempt)
        if prepared is not False:
            async with self.db.transaction() as tx:
                await self.announce_intent(tx, cause, attempt.id, prepared)

    async def prepare_intent(self, attempt: repo.AttemptRow) -> Refusal | Literal[False] | None:
        """Phase 2 and what follows it, outside any transaction of the caller, from the attempt's recovery
        point on: the intent found or created, parked provider events about it applied, or, when the order
        closed meanwhile, the intent cancelled at the provider. False when there is nothing to announce;
        otherwise the provider's refusal, if any, for announce_intent. Shared by the consumer and
        reconciliation, which finishes attempts whose payment request never got this far."""
        done = await self.phases.prepare(_Creation(attempt), lambda c: c.attempt.recovery_point)
        return False if done.closed else done.refusal

    async def _intent_stored(self, c: _Creation) -> _Creation:
        """recorded -> intent_stored."""
        if c.attempt.state != A.CREATING or c.attempt.provider_intent_id is not None:
            return c
        attempt, refusal = await self.create_intent(c.attempt)
        return _Creation(attempt, refusal)

    async def _finished(self, c: _Creation) -> _Creation:
        """intent_stored -> finished for an attempt the order cancelled meanwhile (its intent must not stay
        payable); for any other, parked events first (announce_intent finishes it)."""
        attempt = c.attempt
        if attempt.provider_intent_id is None:
            return c  # refused by the provider: announce_intent records it
        if attempt.state != A.CANCELED:
            # right after the intent is stored (and again on a redelivery, should applying have failed):
            # provider events that came before we knew the intent
            await self.after_intent_stored(attempt.provider_intent_id)
            async with self.db.read() as conn:
                current = await repo.get(conn, attempt.id)
            assert current is not None
            attempt = current
        if attempt.state != A.CANCELED or attempt.provider_intent_id is None:
            return _Creation(attempt, c.refusal)
        key = L.cancel_key(attempt.id)
        intent = await self.gateway.close_intent(attempt.provider_intent_id, idempotency_key=key)
        if intent.status != "canceled":
            metrics.UNCANCELLABLE.inc()
            log.error(
                "intent of a cancelled attempt could not be cancelled",
                attempt_id=str(attempt.id),
                payment_intent_id=intent.id,
                status=intent.status,
            )
        async with self.db.transaction() as tx:
            await repo.finish_recovery(tx, attempt.id)
        return _Creation(attempt, c.refusal, closed=True)

    async def record_attempt(
        self, event: CloudEvent, p: o.OrderPaymentRequested, order_id: uuid.UUID, currency: str
    ) -> repo.AttemptRow:
        """Phase 1 -> recovery point 1: the attempt exists, whatever happens next."""
        async with self.db.transaction() as tx:
            await repo.insert_attempt(
                tx,
                order_id=order_id,
                request_id=str(p.request_id),
                amount=p.amount,
                currency=currency,
                event_id=str(event.id),
            )
            attempt = await repo.by_request(tx, str(p.request_id))
        assert attempt is not None
        return attempt

    async def create_intent(self, attempt: repo.AttemptRow) -> tuple[repo.AttemptRow, Refusal | None]:
        """Phase 2 -> recovery point 2. The lease is taken and the intent id stored in short transactions of
        their own; none is open on the attempt while Stripe is called."""
        lease = self._lease(attempt.id)
        if not await lease.acquire():
            async with self.db.read() as c:
                current = await repo.get(c, attempt.id)
            assert current is not None
            return current, None  # another handler stored the intent while we waited
        try:
            intent = await self._find_or_create_intent(attempt)
        except stripe.StripeError as exc:
            await lease.release()
            if not is_permanent(exc):
                raise
            log.warning("provider refused the payment intent", attempt_id=str(attempt.id), code=exc.code)
            return attempt, Refusal(code=exc.code, message=exc.user_message or str(exc))
        except BaseException:
            await lease.release()
            raise
        async with self.db.transaction() as tx:
            stored = await repo.store_intent(tx, attempt.id, intent.id)
            current = await repo.get(tx, attempt.id)
        assert current is not None
        if not stored:
            # only when our lease expired mid-call and another handler stored its own intent: ours has no
            # client secret handed out, so it can never be paid
            metrics.LOST_INTENT_LEASES.inc()
            log.error("second payment intent for one attempt", attempt_id=str(attempt.id), orphan_intent=intent.id)
        else:
            log.info("payment intent created", attempt_id=str(attempt.id), payment_intent_id=intent.id)
        return current, None

    async def _find_or_create_intent(self, attempt: repo.AttemptRow) -> stripe.PaymentIntent:
        """Called under the creation lease. Never a second PaymentIntent for one attempt: from the second
        call on (a timeout, a dropped answer, a crash may have left one at the provider) the intent is looked
        for by metadata.attempt_id first, and a create whose answer was lost is followed by that look too."""
        async with self.db.read() as c:
            current = await repo.get(c, attempt.id)
        assert current is not None
        not_before = attempt.created_at.timestamp() - 600
        if current.intent_create_calls > 1:
            found = await self.gateway.find_intent(str(attempt.id), not_before=not_before)
            if found is not None:
                metrics.RECOVERED_INTENTS.inc()
                log.warning(
                    "payment intent found after a lost answer", attempt_id=str(attempt.id), payment_intent_id=found.id
                )
                return found
        (call,) = L.create_intent(ledger_store.attempt_view(current)).calls
        try:
            return await self.gateway.create_intent(
                attempt_id=str(attempt.id),
                order_id=str(attempt.order_id),
                amount=attempt.amount,
                currency=attempt.currency,
                idempotency_key=call.idempotency_key,
            )
        except stripe.StripeError as exc:
            if is_permanent(exc):
                raise
            # the provider may have created it before its answer was lost
            found = await self.gateway.find_intent(str(attempt.id), not_before=not_before)
            if found is None:
                raise
            metrics.RECOVERED_INTENTS.inc()
            log.warning(
                "payment intent found after a lost answer",
                attempt_id=str(attempt.id),
                payment_intent_id=found.id,
                error=type(exc).__name__,
            )
            return found

    def _lease(self, attempt_id: uuid.UUID) -> leases.Lease:
        """Taken while the attempt is `creating` without an intent; not needed once another handler stored
        one or the attempt was cancelled."""

        async def still_needed(c: AsyncConnection) -> bool:
            current = await repo.get(c, attempt_id)
            return current is not None and current.provider_intent_id is None and current.state == A.CREATING

        return leases.Lease(
            self.db,
            self.lease_seconds,
            take=lambda tx: repo.lease_intent_creation(tx, attempt_id, self.lease_seconds),
            release=lambda tx: repo.release_lease(tx, attempt_id),
            still_needed=still_needed,
            busy=lambda: AttemptBusy(f"attempt {attempt_id} intent creation is leased by another handler"),
            what=f"intent creation of attempt {attempt_id}",
        )

    async def announce_intent(
        self, conn: AsyncConnection, event: CloudEvent, attempt_id: uuid.UUID, refusal: Refusal | None
    ) -> None:
        """Phase 3, in the consumer's transaction: an attempt already past `creating` was announced before."""
        ledger = await ledger_store.load_for_attempt(conn, attempt_id)
        attempt = ledger.attempt(attempt_id)
        decision = L.announce_intent(attempt, (refusal.code, refusal.message) if refusal is not None else None)
        if decision.outcome == "pending":
            raise AttemptBusy(f"attempt {attempt.id} has no payment intent yet")
        await ledger_store.apply(conn, ledger, decision, event, self.publisher)
