"""Provider events (provider.stripe.event), one path for each, live or parked earlier: only the event the
proof shows the provider sent is applied (proof.py); PaymentIntent facts move the attempt through the
ledger (domain/ledger.py), successes and authorizations through payments.holding (at most one attempt per
order holds its money); refunds made at the provider and disputes have their own modules here. An event
about an intent no attempt knows yet is parked (parking.py) and applied once the intent is stored."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.domain import ledger as L
from handshake_payment.domain.attempts import HOLDS_PAYMENT, provider_target
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.intents import intent_facts
from handshake_payment.domain.ledger import Settled
from handshake_payment.payments.holding import Holding
from handshake_payment.provider_events import parking
from handshake_payment.provider_events.disputes import Disputes, disputed_intent
from handshake_payment.provider_events.proof import ProviderProof
from handshake_payment.provider_events.refunds import PROVIDER_REFUND_TYPES, ProviderRefunds, refunded_intent
from handshake_payment.publisher import EventPublisher
from handshake_payment.store import attempts as repo
from handshake_payment.store import ledger as ledger_store
from handshake_shared.consumer import PoisonMessage
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import provider as prov

log = structlog.get_logger("payment")


class ProviderEventIntake:
    def __init__(
        self,
        db: Database,
        publisher: EventPublisher,
        holding: Holding,
        disputes: Disputes,
        provider_refunds: ProviderRefunds,
        proof: ProviderProof,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.holding = holding
        self.disputes = disputes
        self.provider_refunds = provider_refunds
        self.proof = proof

    async def on_provider_event(
        self, conn: AsyncConnection, event: CloudEvent, forwarded: prov.ProviderStripeEvent
    ) -> None:
        """The one path of a provider event, live or parked earlier; an event about an intent no attempt
        knows yet is parked (in conn's transaction, as it was forwarded, proof included) and applied once the
        intent is stored. Only the event the proof shows the provider sent is applied (proof.py);
        without proof the message is refused and dead-lettered, and nothing changes."""
        p = await self.proof.verified(forwarded)
        if p.provider_type == "charge.dispute.created":
            outcome = await self.disputes.on_dispute(conn, event, p)
            intent_id = disputed_intent(p.object)
            if outcome == "unmatched" and intent_id:
                outcome = await self._park(conn, event, p, intent_id, lambda: self.disputes.on_dispute(conn, event, p))
            metrics.PROVIDER_FACTS.labels(p.provider_type, outcome).inc()
            return
        if p.provider_type in PROVIDER_REFUND_TYPES:
            # refunds made at the provider outside Handshake (provider_events/refunds.py)
            outcome = await self.provider_refunds.on_refund_event(conn, event, p)
            refunded = refunded_intent(p.provider_type, p.object)
            if outcome == "unmatched" and refunded:
                outcome = await self._park(
                    conn, event, p, refunded, lambda: self.provider_refunds.on_refund_event(conn, event, p)
                )
            metrics.PROVIDER_FACTS.labels(p.provider_type, outcome).inc()
            return
        if p.object_type not in (None, "payment_intent"):
            metrics.PROVIDER_FACTS.labels(p.provider_type, "ignored").inc()
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
        metrics.PROVIDER_FACTS.labels(p.provider_type, outcome).inc()

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
                    metrics.PARKED.labels("applied").inc()
                except PoisonMessage as exc:
                    metrics.PARKED.labels("unusable").inc()
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
            remedy = await self.holding.prepare(attempt.id, fact, event)
            outcome = await self.holding.apply(conn, event, attempt.id, fact, remedy)
            if outcome == "mismatch":
                metrics.MISMATCHES.labels(detected_by).inc()
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
        await ledger_store.apply(conn, ledger, decision, event, self.publisher)
        return decision.outcome

    async def _attempt_for_intent(self, intent_id: str, attempt_id: str | None) -> repo.AttemptRow | None:
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
            await repo.adopt_intent(tx, attempt.id, intent_id)
            adopted = await repo.get(tx, attempt.id)
        # the intent is known from now on: what was parked about it comes first
        await self.apply_parked(intent_id)
        return adopted
