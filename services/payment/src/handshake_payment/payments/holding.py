"""At most one attempt per order holds its money.

A success (or, with manual capture, an authorization) of attempt X is applied in up to three steps:

  1. only when another attempt of the order already holds the payment, or X is already known to be a
     duplicate: in its own transaction under the order lock, X takes the state the provider reports, is
     marked duplicate_of the holder and, when money was taken, gets an automatic refund row (reason
     duplicate_capture). Recovery point give_back_point = marked_duplicate, written with the mark;
  2. with no transaction of ours open: the money goes back at the provider (the refund's phase 2) or the
     authorization is cancelled. Recovery point given_back, written in the transaction that records it (the
     refund's provider id, or the release's own);
  3. in the consumer's transaction under the order lock: either the usual transition + payment.succeeded
     / payment.authorized, or, for a duplicate, the refund's outcome (payment.refunded, automatic) or the
     released authorization (payment.canceled), with give_back_point finished. A duplicate never announces
     its success.

Step 2 runs from the row's recovery point (the giving_back table), so a redelivery, a capture or cancel
that finds the same money, and reconciliation (finish) all resume where the last one stopped.
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
from handshake_payment.domain.recovery import GiveBackPoint
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
    """What step 2 did for a duplicate that the row does not say: a released authorization is its recovery
    point, a refused refund is not written (a redelivery asks the provider again and is refused again)."""

    refusal: Refusal | None = None  # the provider refused the automatic refund


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
    cause: CloudEvent
    point: str  # the row's give_back_point
    remedy: Remedy = Remedy()


class Holding:
    def __init__(self, db: Database, publisher: EventPublisher, gateway: StripeGateway, refunds: Refunds) -> None:
        self.db = db
        self.publisher = publisher
        self.gateway = gateway
        self.refunds = refunds
        # step 2 from the row's give_back_point on; step 1, the mark, writes the first point
        self.giving_back = Phases[_GivingBack](list(GiveBackPoint), Phase(GiveBackPoint.GIVEN_BACK, self._given_back))

    async def prepare(self, attempt_id: uuid.UUID, fact: Settled, cause: CloudEvent) -> Remedy:
        """Steps 1 and 2, each in transactions of their own; nothing when X is the order's only payment."""
        async with self.db.read() as c:
            attempt = await repo.get(c, attempt_id)
            assert attempt is not None
            holder = await repo.payment_holder(c, attempt.order_id, other_than=attempt.id)
        if attempt.duplicate_of is None and holder is None:
            return Remedy()  # the order's only payment: nothing to give back
        if not await self._record_duplicate(attempt_id, fact, cause):
            return Remedy()
        return await self._give_back_from_its_point(attempt_id, cause)

    async def finish(self, attempt: repo.AttemptRow, cause: CloudEvent) -> None:
        """A give-back left half-way (reconciliation finds its point not finished): step 2 from the row's
        point, then step 3 in a transaction of its own."""
        remedy = await self._give_back_from_its_point(attempt.id, cause)
        async with self.db.transaction() as tx:
            ledger = await ledger_store.load_for_attempt(tx, attempt.id)
            duplicate = ledger.attempt(attempt.id)
            decision = L.finish_duplicate(ledger, duplicate, refund_refusal=_refusal(remedy))
            await self._write(tx, cause, ledger, duplicate, decision, None)

    async def _give_back_from_its_point(self, attempt_id: uuid.UUID, cause: CloudEvent) -> Remedy:
        async with self.db.read() as c:
            attempt = await repo.get(c, attempt_id)
        assert attempt is not None and attempt.give_back_point is not None
        done = await self.giving_back.prepare(_GivingBack(attempt_id, cause, attempt.give_back_point), _point)
        return done.remedy

    async def _given_back(self, g: _GivingBack) -> _GivingBack:
        """marked_duplicate -> given_back; a refused refund stays where it was, its refusal goes to step 3."""
        remedy = await self._give_back(g.attempt_id, g.cause)
        return replace(g, point=GiveBackPoint.GIVEN_BACK if remedy.refusal is None else g.point, remedy=remedy)

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
        """Step 2, no transaction of ours open: the provider call the ledger names for the duplicate. Its point
        is written with its result: by the refund's store (store/refunds.py), or here once released."""
        async with self.db.read() as c:
            ledger = await ledger_store.load_for_attempt(c, attempt_id, lock=False)
        attempt = ledger.attempt(attempt_id)
        for call in L.give_back(ledger, attempt).calls:
            if call.kind == "create_refund":
                return Remedy(refusal=await self.refunds.execute(call.subject))
            assert call.kind == "cancel_intent" and attempt.intent_id is not None
            intent = await self.gateway.close_intent(attempt.intent_id, idempotency_key=call.idempotency_key)
            if intent.status == "canceled":
                async with self.db.transaction() as tx:
                    await repo.advance_point(tx, attempt_id, "give_back_point", GiveBackPoint.GIVEN_BACK)
                return Remedy()
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
        decision = L.settle(ledger, attempt_id, fact, refund_refusal=_refusal(remedy))
        return await self._write(conn, event, ledger, ledger.attempt(attempt_id), decision, fact)

    async def _write(
        self,
        conn: AsyncConnection,
        event: CloudEvent,
        ledger: L.Ledger,
        attempt: L.Attempt,
        decision: L.Decision,
        fact: Settled | None,
    ) -> str:
        if decision.outcome == "race":
            raise SettlementRace(decision.detail)
        if decision.outcome == "pending":
            raise RefundPending(decision.detail)
        await ledger_store.apply(conn, ledger, decision, event, self.publisher)
        if attempt.duplicate_of is not None and attempt.state == A.SUCCEEDED:
            self.refunds.count_finished(ledger, decision)
        if decision.outcome == "mismatch" and fact is not None:
            log.error(
                "provider amount differs from the attempt",
                attempt_id=str(attempt.id),
                state=fact.target,
                provider_amount=fact.amount,
                provider_currency=fact.currency,
                requested=attempt.amount,
                requested_currency=attempt.currency,
                detected_by=fact.mismatch_detected_by,
            )
        return decision.outcome


def _point(g: _GivingBack) -> str:
    return g.point


def _refusal(remedy: Remedy) -> tuple[str | None, str | None] | None:
    return (remedy.refusal.code, remedy.refusal.message) if remedy.refusal else None
