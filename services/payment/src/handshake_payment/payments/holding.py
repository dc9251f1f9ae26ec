"""At most one attempt per order holds its money.

A success (or, with manual capture, an authorization) of attempt X is applied in up to three steps:

  1. only when another attempt of the order already holds the payment, or X is already known to be a
     duplicate: in its own transaction under the order lock, X takes the state the provider reports, is
     marked duplicate_of the holder and, when money was taken, gets an automatic refund row (reason
     duplicate_capture). Recovery point: X is known to be a duplicate;
  2. with no transaction of ours open: the money goes back at the provider (the refund's phase 2) or the
     authorization is cancelled;
  3. in the consumer's transaction under the order lock: either the usual transition + payment.succeeded
     / payment.authorized, or, for a duplicate, the refund's outcome (payment.refunded, automatic) or the
     released authorization (payment.canceled). A duplicate never announces its success.

Step 3 checks again under the lock: if another attempt took the payment after step 1 looked, it raises
and the consumer's retry makes X a duplicate. A partial unique index backs the rule in the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.domain import ledger as L
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.intents import captured_amount
from handshake_payment.domain.ledger import Settled
from handshake_payment.domain.recovery import FINISHED
from handshake_payment.phases import Phase, Phases
from handshake_payment.publisher import EventPublisher
from handshake_payment.refunds.requests import RefundPending, Refunds
from handshake_payment.store import attempts as repo
from handshake_payment.store import ledger as ledger_store
from handshake_payment.stripe_gateway import Refusal, StripeGateway
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent

log = structlog.get_logger("payment")


__all__ = ["Holding", "Remedy", "Settled", "SettlementRace", "settled_from_intent"]


@dataclass(frozen=True)
class Remedy:
    """What step 2 did for a duplicate."""

    refusal: Refusal | None = None  # the provider refused the automatic refund
    released: bool = False  # the duplicate's authorization is cancelled at the provider


class SettlementRace(Exception):
    """The order's payment changed hands between step 1 and step 3; the consumer retries."""


def settled_from_intent(intent: dict[str, Any], reason: str, requested: int | None = None) -> Settled:
    """A succeeded PaymentIntent as we retrieved it from the provider."""
    return Settled(
        target=A.SUCCEEDED,
        amount=captured_amount(intent, requested),
        currency=str(intent["currency"]).upper(),
        intent_id=intent["id"],
        reason=reason,
    )


@dataclass(frozen=True)
class _GivingBack:
    attempt_id: uuid.UUID
    fact: Settled
    cause: CloudEvent
    point: str = "settled"
    remedy: Remedy = Remedy()


class Holding:
    def __init__(self, db: Database, publisher: EventPublisher, gateway: StripeGateway, refunds: Refunds) -> None:
        self.db = db
        self.publisher = publisher
        self.gateway = gateway
        self.refunds = refunds
        # the duplicate's give-back: its points are not a column, they are what the rows and the provider
        # already say (duplicate_of, the automatic refund's own recovery point, the intent's status)
        self.giving_back = Phases[_GivingBack](
            ("settled", "marked_duplicate", "given_back", FINISHED),
            Phase("marked_duplicate", self._marked),
            Phase("given_back", self._given_back),
        )

    async def prepare(self, attempt_id: uuid.UUID, fact: Settled, cause: CloudEvent) -> Remedy:
        """Steps 1 and 2 (the giving_back table), each in transactions of their own; nothing when X is the order's only
        payment. What they did is on the rows (duplicate_of, the automatic refund and its own recovery point)
        and at the provider under the call's key, so a redelivery runs the table again from the top."""
        done = await self.giving_back.prepare(_GivingBack(attempt_id, fact, cause), lambda g: g.point)
        return done.remedy

    async def _marked(self, g: _GivingBack) -> _GivingBack:
        async with self.db.read() as c:
            attempt = await repo.get(c, g.attempt_id)
            assert attempt is not None
            holder = await repo.payment_holder(c, attempt.order_id, other_than=attempt.id)
        if attempt.duplicate_of is None and holder is None:
            return replace(g, point="given_back")  # the order's only payment: nothing to give back
        if not await self._record_duplicate(g.attempt_id, g.fact, g.cause):
            return replace(g, point="given_back")
        return replace(g, point="marked_duplicate")

    async def _given_back(self, g: _GivingBack) -> _GivingBack:
        return replace(g, point="given_back", remedy=await self._give_back(g.attempt_id, g.cause))

    async def _record_duplicate(self, attempt_id: uuid.UUID, fact: Settled, cause: CloudEvent) -> bool:
        """Step 1 in its own transaction under the order lock: True when the attempt is a duplicate."""
        async with self.db.transaction() as tx:
            ledger = await ledger_store.load_for_attempt(tx, attempt_id)
            decision = L.mark_duplicate(ledger, attempt_id, fact)
            await ledger_store.apply(tx, ledger, decision, cause, self.publisher)
        attempt = ledger.attempt(attempt_id)
        if decision.moves:
            metrics.DUPLICATES.labels(fact.target.value).inc()
            log.warning(
                "second payment for one order",
                attempt_id=str(attempt_id),
                holder_attempt_id=str(dict(decision.moves[0].columns).get("duplicate_of", attempt.duplicate_of)),
                state=fact.target,
                amount=fact.amount,
                currency=fact.currency,
            )
        elif decision.outcome == "refused":
            log.error(
                "provider reports money on an attempt the lifecycle cannot take it on",
                attempt_id=str(attempt_id),
                state=attempt.state,
                target=fact.target,
            )
        return decision.outcome == "duplicate"

    async def _give_back(self, attempt_id: uuid.UUID, cause: CloudEvent) -> Remedy:
        """Step 2, no transaction of ours open: the provider call the ledger names for the duplicate."""
        async with self.db.read() as c:
            ledger = await ledger_store.load_for_attempt(c, attempt_id, lock=False)
        attempt = ledger.attempt(attempt_id)
        for call in L.give_back(ledger, attempt).calls:
            if call.kind == "create_refund":
                return Remedy(refusal=await self.refunds.execute(call.subject))
            assert call.kind == "cancel_intent" and attempt.intent_id is not None
            intent = await self.gateway.close_intent(attempt.intent_id, idempotency_key=call.idempotency_key)
            if intent.status == "canceled":
                return Remedy(released=True)
            if intent.status == "succeeded":
                # captured elsewhere (dashboard) before our cancel landed: a captured duplicate, refunded as one
                fact = settled_from_intent(intent.to_dict(), "captured before its authorization was released")
                await self._record_duplicate(attempt_id, fact, cause)
                return await self._give_back(attempt_id, cause)
            raise SettlementRace(f"authorization of duplicate attempt {attempt_id} is {intent.status}")
        return Remedy()

    async def apply(
        self, conn: AsyncConnection, event: CloudEvent, attempt_id: uuid.UUID, fact: Settled, remedy: Remedy
    ) -> str:
        """Step 3, in the consumer's transaction. Returns applied, mismatch, refused (the table did not allow
        it: a duplicate delivery) or duplicate."""
        ledger = await ledger_store.load_for_attempt(conn, attempt_id)
        refusal = (remedy.refusal.code, remedy.refusal.message) if remedy.refusal else None
        decision = L.settle(ledger, attempt_id, fact, released=remedy.released, refund_refusal=refusal)
        if decision.outcome == "race":
            raise SettlementRace(decision.detail)
        attempt = ledger.attempt(attempt_id)
        if decision.outcome == "pending":
            raise RefundPending(decision.detail)
        await ledger_store.apply(conn, ledger, decision, event, self.publisher)
        if attempt.duplicate_of is not None and attempt.state == A.SUCCEEDED:
            self.refunds.count_finished(ledger, decision)
        if decision.outcome == "mismatch":
            log.error(
                "provider amount differs from the attempt",
                attempt_id=str(attempt_id),
                state=fact.target,
                provider_amount=fact.amount,
                provider_currency=fact.currency,
                requested=attempt.amount,
                requested_currency=attempt.currency,
                detected_by=fact.mismatch_detected_by,
            )
        return decision.outcome
