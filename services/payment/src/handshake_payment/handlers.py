"""The payment side of the saga.

order.payment_requested runs in explicit phases, each ending at a recovery point that a redelivery resumes
from (the rocket-rides-atomic idea):

  1. the attempt row, committed in its own transaction, keyed by the request id;
  2. the Stripe PaymentIntent, created with an idempotency key derived from the attempt id while no
     transaction of ours holds or writes the attempt (only the consumer's inbox claim is open: the shared
     consumer begins it before any handler runs), its id committed at once in its own transaction;
  3. requires_payment + payment.intent_created, in the consumer's transaction with the inbox row.

A crash after 1 creates the intent for the same attempt; after 2 it only announces the stored intent.
An order cancelled meanwhile cancels the attempt; creation then never starts, or cancels what it made.

Provider facts (provider.stripe.event) move the attempt through the lifecycle table and are announced
in the consumer's transaction; successes and authorizations go through settlement.py (at most one attempt
per order holds its money). Cancellation, capture and refunds live in their own modules, wired here."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import stripe
import structlog
from prometheus_client import Counter
from sqlalchemy import update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import leases, ledger_store, parking
from handshake_payment import repository as repo
from handshake_payment.cancellation import Cancellation
from handshake_payment.captures import Captures
from handshake_payment.db import payment_attempts
from handshake_payment.disputes import Disputes, disputed_intent
from handshake_payment.domain import ledger as L
from handshake_payment.domain.attempts import HOLDS_PAYMENT, provider_target
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.intents import intent_facts
from handshake_payment.domain.ledger import Settled
from handshake_payment.facts import Facts
from handshake_payment.ids import as_uuid
from handshake_payment.provider_proof import ProviderProof
from handshake_payment.provider_refunds import PROVIDER_REFUND_TYPES, ProviderRefunds, refunded_intent
from handshake_payment.refunds import Refunds
from handshake_payment.settings import PaymentSettings
from handshake_payment.settlement import Settlement
from handshake_payment.stripe_gateway import Refusal, StripeGateway, is_permanent
from handshake_shared.consumer import Handler, PoisonMessage
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import order as o
from handshake_shared.events import provider as prov
from handshake_shared.money import CurrencyError, check_currency
from handshake_shared.outbox import Outbox

log = structlog.get_logger("payment")

PROVIDER_FACTS = Counter(
    "handshake_payment_provider_events_total",
    "Provider events by Stripe type and outcome (applied, refused, duplicate: a second attempt's payment, "
    "given back; parked: about an intent no attempt knows yet, applied once one stores it; unmatched, ignored)",
    ["type", "outcome"],
)
LOST_LEASES = Counter(
    "handshake_payment_intent_lease_lost_total",
    "PaymentIntents created after another handler had already stored one for the attempt (provider ignored the key)",
)
UNCANCELLABLE = Counter(
    "handshake_payment_cancelled_attempt_intent_open_total",
    "Intents of attempts cancelled while being created that the provider would not cancel (already paid or "
    "settling): reconciliation must look at them",
)


RECOVERED_INTENTS = Counter(
    "handshake_payment_intents_recovered_total",
    "PaymentIntents found at the provider (metadata.attempt_id) after a create whose answer was lost, instead "
    "of creating a second one",
)
MISMATCHES = Counter(
    "handshake_payment_mismatches_total",
    "Attempts whose provider amount or currency differs from what was asked, by who noticed (webhook, "
    "reconciliation): never announced as paid",
    ["detected_by"],
)


class AttemptBusy(Exception):
    """Another handler holds the attempt's intent-creation lease; the consumer retries later."""


class PaymentHandlers:
    def __init__(self, db: Database, outbox: Outbox, gateway: StripeGateway, settings: PaymentSettings) -> None:
        self.db = db
        self.facts = Facts(outbox)
        self.gateway = gateway
        self.lease_seconds = settings.provider_call_lease_seconds
        self.refunds = Refunds(db, self.facts, gateway, self.lease_seconds)
        self.settlement = Settlement(db, self.facts, gateway, self.refunds)
        self.captures = Captures(db, self.facts, gateway, self.settlement)
        self.cancellation = Cancellation(db, self.facts, gateway, self.settlement)
        self.disputes = Disputes(db, self.facts)
        self.provider_refunds = ProviderRefunds(self.facts)
        self.proof = ProviderProof([s.get_secret_value() for s in settings.stripe_webhook_secrets], gateway)

    async def emit(self, conn: AsyncConnection, type: str, order_id: str, data: Any, cause: CloudEvent) -> None:
        await self.facts.emit(conn, type, order_id, data, cause)

    # -- order.events.v1 ------------------------------------------------------------------------

    async def on_payment_requested(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderPaymentRequested) -> None:
        try:
            order_id = as_uuid(p.order_id)
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
        prepared = await self.prepare_intent(attempt)
        if prepared is not False:
            await self.announce_intent(conn, event, attempt.id, prepared)

    async def prepare_intent(self, attempt: Row[Any]) -> Refusal | Literal[False] | None:
        """Phase 2 and what follows it, outside any transaction of the caller: the intent found or created,
        parked provider events about it applied. False when there is nothing to announce (the order closed
        meanwhile); otherwise the provider's refusal, if any, for announce_intent. Shared by the consumer and
        reconciliation, which finishes attempts whose payment request never got this far."""
        refusal: Refusal | None = None
        if attempt.state == A.CREATING and attempt.provider_intent_id is None:
            attempt, refusal = await self.create_intent(attempt)
        if attempt.provider_intent_id is not None and attempt.state != A.CANCELED:
            # right after recovery point 2 (and again on a redelivery, should applying have failed):
            # provider events that came before we knew the intent
            await self.apply_parked(attempt.provider_intent_id)
            async with self.db.read() as c:
                current = await repo.get(c, attempt.id)
            assert current is not None
            attempt = current
        if attempt.state == A.CANCELED and attempt.provider_intent_id is not None:
            # the order closed while the intent was being created: it must not stay payable
            key = L.cancel_key(attempt.id)
            intent = await self.gateway.close_intent(attempt.provider_intent_id, idempotency_key=key)
            if intent.status != "canceled":
                UNCANCELLABLE.inc()
                log.error(
                    "intent of a cancelled attempt could not be cancelled",
                    attempt_id=str(attempt.id),
                    payment_intent_id=intent.id,
                    status=intent.status,
                )
            return False
        return refusal

    async def record_attempt(
        self, event: CloudEvent, p: o.OrderPaymentRequested, order_id: uuid.UUID, currency: str
    ) -> Row[Any]:
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

    async def create_intent(self, attempt: Row[Any]) -> tuple[Row[Any], Refusal | None]:
        """Phase 2 -> recovery point 2. The lease is taken and the intent id stored in short transactions of
        their own; none is open on the attempt while Stripe is called."""
        if not await self._take_lease(attempt.id):
            async with self.db.read() as c:
                current = await repo.get(c, attempt.id)
            assert current is not None
            return current, None  # another handler stored the intent while we waited
        try:
            intent = await self._find_or_create_intent(attempt)
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

    async def _find_or_create_intent(self, attempt: Row[Any]) -> stripe.PaymentIntent:
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
                RECOVERED_INTENTS.inc()
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
            RECOVERED_INTENTS.inc()
            log.warning(
                "payment intent found after a lost answer",
                attempt_id=str(attempt.id),
                payment_intent_id=found.id,
                error=type(exc).__name__,
            )
            return found

    async def _take_lease(self, attempt_id: uuid.UUID) -> bool:
        """True once this handler may call the provider; False when another handler stored the intent or the
        attempt was cancelled. Waits at most one lease period for a holder that may have crashed mid-call."""

        async def take() -> bool:
            async with self.db.transaction() as tx:
                return await repo.lease_intent_creation(tx, attempt_id, self.lease_seconds)

        async def still_needed() -> bool:
            async with self.db.read() as c:
                current = await repo.get(c, attempt_id)
            return current is not None and current.provider_intent_id is None and current.state == A.CREATING

        return await leases.acquire(
            take,
            still_needed,
            lease_seconds=self.lease_seconds,
            busy=lambda: AttemptBusy(f"attempt {attempt_id} intent creation is leased by another handler"),
        )

    async def _release_lease(self, attempt_id: uuid.UUID) -> None:
        try:
            async with self.db.transaction() as tx:
                await repo.release_lease(tx, attempt_id)
        except Exception as exc:
            log.warning("could not release intent lease", attempt_id=str(attempt_id), error=repr(exc))

    async def announce_intent(
        self, conn: AsyncConnection, event: CloudEvent, attempt_id: uuid.UUID, refusal: Refusal | None
    ) -> None:
        """Phase 3, in the consumer's transaction: an attempt already past `creating` was announced before."""
        ledger = await ledger_store.load_for_attempt(conn, attempt_id)
        attempt = ledger.attempt(attempt_id)
        decision = L.announce_intent(attempt, (refusal.code, refusal.message) if refusal is not None else None)
        if decision.outcome == "pending":
            raise AttemptBusy(f"attempt {attempt.id} has no payment intent yet")
        await ledger_store.apply(conn, ledger, decision, event, self.facts)

    # -- provider.events.v1 ---------------------------------------------------------------------

    async def on_provider_event(
        self, conn: AsyncConnection, event: CloudEvent, forwarded: prov.ProviderStripeEvent
    ) -> None:
        """The one path of a provider event, live or parked earlier; an event about an intent no attempt
        knows yet is parked (in conn's transaction, as it was forwarded, proof included) and applied once the
        intent is stored. Only the event the proof shows the provider sent is applied (provider_proof.py);
        without proof the message is refused and dead-lettered, and nothing changes."""
        p = await self.proof.verified(forwarded)
        if p.provider_type == "charge.dispute.created":
            outcome = await self.disputes.on_dispute(conn, event, p)
            intent_id = disputed_intent(p.object)
            if outcome == "unmatched" and intent_id:
                outcome = await self._park(conn, event, p, intent_id, lambda: self.disputes.on_dispute(conn, event, p))
            PROVIDER_FACTS.labels(p.provider_type, outcome).inc()
            return
        if p.provider_type in PROVIDER_REFUND_TYPES:
            # refunds made at the provider outside Handshake (provider_refunds.py)
            outcome = await self.provider_refunds.on_refund_event(conn, event, p)
            refunded = refunded_intent(p.provider_type, p.object)
            if outcome == "unmatched" and refunded:
                outcome = await self._park(
                    conn, event, p, refunded, lambda: self.provider_refunds.on_refund_event(conn, event, p)
                )
            PROVIDER_FACTS.labels(p.provider_type, outcome).inc()
            return
        if p.object_type not in (None, "payment_intent"):
            PROVIDER_FACTS.labels(p.provider_type, "ignored").inc()
            return
        intent_id = p.object_id or p.object.get("id")

        async def apply() -> str:
            return await self.apply_intent_fact(
                conn,
                event,
                provider_type=p.provider_type,
                obj=p.object,
                status=p.status,
                intent_id=intent_id,
                attempt_hint=p.attempt_id,
                amount_hint=p.amount,
                currency_hint=p.currency,
                provider_event_id=p.provider_event_id,
                reason=f"stripe {p.provider_type}",
                detected_by="webhook",
            )

        outcome = await apply()
        if outcome == "unmatched" and intent_id:
            outcome = await self._park(conn, event, p, intent_id, apply)
        PROVIDER_FACTS.labels(p.provider_type, outcome).inc()

    async def _park(
        self,
        conn: AsyncConnection,
        event: CloudEvent,
        p: prov.ProviderStripeEvent,
        intent_id: str,
        apply: Callable[[], Awaitable[str]],
    ) -> str:
        """Park the event unless the intent was stored meanwhile (then it is applied now). The intent lock
        makes this and apply_parked exclusive: one of them sees the other's commit."""
        await parking.lock_intent(conn, intent_id)
        if await repo.by_intent(conn, intent_id) is not None:
            return await apply()
        await parking.park(conn, event, p, intent_id)
        log.warning(
            "provider event parked until its payment intent is known",
            provider_event_id=p.provider_event_id,
            provider_type=p.provider_type,
            payment_intent_id=intent_id,
        )
        return "parked"

    async def apply_parked(self, intent_id: str) -> int:
        """Apply the parked events of an intent now stored on an attempt, oldest (provider `created`) first,
        each in its own transaction with its applied_at; how many were applied. Idempotent."""
        applied = 0
        while True:
            async with self.db.transaction() as tx:
                await parking.lock_intent(tx, intent_id)
                row = await parking.next_pending(tx, intent_id)
                if row is None:
                    return applied
                event, p = parking.event_of(row)
                try:
                    await self.on_provider_event(tx, event, p)
                    parking.PARKED.labels("applied").inc()
                except PoisonMessage as exc:
                    parking.PARKED.labels("unusable").inc()
                    log.error(
                        "parked provider event cannot be applied",
                        provider_event_id=row.provider_event_id,
                        error=str(exc),
                    )
                await parking.mark_applied(tx, row.id)
                applied += 1

    async def apply_intent_fact(
        self,
        conn: AsyncConnection,
        event: CloudEvent,
        *,
        provider_type: str,
        obj: dict[str, Any],
        status: str | None,
        intent_id: str | None,
        attempt_hint: str | None,
        amount_hint: int | None,
        currency_hint: str | None,
        provider_event_id: str | None,
        reason: str,
        detected_by: str,
    ) -> str:
        """What a PaymentIntent at the provider says, applied to its attempt in conn's transaction: the one
        path for a webhook and for reconciliation (which passes the intent it retrieved). Returns ignored,
        unmatched, applied, refused (the table did not allow it: nothing new), duplicate or mismatch."""
        target = provider_target(provider_type, status or obj.get("status"))
        if target is None:
            return "ignored"
        facts = intent_facts(obj)
        if not intent_id:
            raise PoisonMessage(f"{provider_type} {provider_event_id} names no payment intent")
        attempt = await self._attempt_for_intent(intent_id, attempt_hint or facts.attempt_id)
        if attempt is None:
            log.warning(
                "provider event for an unknown payment intent",
                provider_event_id=provider_event_id,
                provider_type=provider_type,
                payment_intent_id=intent_id,
            )
            return "unmatched"
        if target in HOLDS_PAYMENT:
            amount = facts.amount if target == A.SUCCEEDED else facts.amount_capturable
            amount = amount if amount is not None else amount_hint
            currency = facts.currency or (currency_hint.upper() if currency_hint else None)
            if amount is None or currency is None:
                raise PoisonMessage(f"{provider_event_id}: a {target} without amount or currency")
            mismatch = L.is_mismatch(
                ledger_store.attempt_view(attempt),
                target,
                amount,
                currency,
                manual=obj.get("capture_method") == "manual",
            )
            fact = Settled(
                target=target,
                amount=amount,
                currency=currency,
                intent_id=intent_id,
                reason=reason,
                provider_event_id=provider_event_id,
                mismatch_detected_by=detected_by if mismatch else None,
            )
            remedy = await self.settlement.prepare(attempt.id, fact, event)
            outcome = await self.settlement.apply(conn, event, attempt.id, fact, remedy)
            if outcome == "mismatch":
                MISMATCHES.labels(detected_by).inc()
            return outcome
        ledger = await ledger_store.load(conn, attempt.order_id)
        decision = L.end_attempt(
            ledger,
            attempt.id,
            target,
            reason,
            intent_id=intent_id,
            code=facts.failure_code,
            message=facts.failure_message,
            provider_event_id=provider_event_id,
        )
        await ledger_store.apply(conn, ledger, decision, event, self.facts)
        return decision.outcome

    async def _attempt_for_intent(self, intent_id: str, attempt_id: str | None) -> Row[Any] | None:
        """Read without a lock: every lock of this handler is taken later, under the order lock."""
        async with self.db.read() as c:
            attempt = await repo.by_intent(c, intent_id)
        if attempt is not None or not attempt_id:
            return attempt
        # the intent's metadata names the attempt: the process died between creating the intent and
        # storing its id (recovery point 2 never reached), so adopt it now, in a transaction of its own
        try:
            key = uuid.UUID(attempt_id)
        except ValueError:
            return None
        async with self.db.transaction() as tx:
            attempt = await repo.get(tx, key, lock=True)
            if attempt is None:
                return None
            if attempt.provider_intent_id is not None:
                log.error(
                    "event for a second intent of one attempt",
                    attempt_id=attempt_id,
                    payment_intent_id=intent_id,
                    stored_intent_id=attempt.provider_intent_id,
                )
                return None
            await tx.execute(
                update(payment_attempts).where(payment_attempts.c.id == attempt.id).values(provider_intent_id=intent_id)
            )
            adopted = await repo.get(tx, attempt.id)
        # the intent is known from now on: what was parked about it comes first
        await self.apply_parked(intent_id)
        return adopted

    def order_handlers(self) -> dict[str, Handler]:
        return {
            "order.payment_requested": self.on_payment_requested,
            "order.cancelled": self.cancellation.on_order_closed,
            "order.expired": self.cancellation.on_order_closed,
            "order.capture_requested": self.captures.on_capture_requested,
            "order.refund_requested": self.refunds.on_refund_requested,
        }

    def provider_handlers(self) -> dict[str, Handler]:
        return {"provider.stripe.event": self.on_provider_event}
