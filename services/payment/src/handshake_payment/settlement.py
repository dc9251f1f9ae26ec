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
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import repository as repo
from handshake_payment.domain.attempts import ATTEMPT_LIFECYCLE, AttemptState
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.intents import captured_amount
from handshake_payment.domain.refunds import automatic_refund_id
from handshake_payment.facts import Facts
from handshake_payment.refunds import Refunds
from handshake_payment.stripe_gateway import Refusal, StripeGateway
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import payment as pay

log = structlog.get_logger("payment")

DUPLICATES = Counter(
    "handshake_payment_duplicate_payments_total",
    "Attempts paid or authorized while another attempt of the order already held its payment; their money "
    "is given back automatically",
    ["state"],
)
DUPLICATE_AUTHORIZATION = "duplicate_authorization"


@dataclass(frozen=True)
class Settled:
    """A provider fact that an attempt's money is held (authorized) or taken (succeeded)."""

    target: AttemptState
    amount: int
    currency: str
    intent_id: str
    reason: str
    provider_event_id: str | None = None
    # set (webhook, reconciliation) when the provider holds another amount or currency than the attempt
    # asked for: the money is recorded as held, payment.mismatch is announced, never payment.succeeded
    mismatch_detected_by: str | None = None


@dataclass(frozen=True)
class Remedy:
    """What step 2 did for a duplicate."""

    refusal: Refusal | None = None  # the provider refused the automatic refund
    released: bool = False  # the duplicate's authorization is cancelled at the provider


class SettlementRace(Exception):
    """The order's payment changed hands between step 1 and step 3; the consumer retries."""


def cancel_key(attempt_id: uuid.UUID) -> str:
    return f"handshake-attempt-{attempt_id}-cancel"


def settled_from_intent(intent: dict[str, Any], reason: str, requested: int | None = None) -> Settled:
    """A succeeded PaymentIntent as we retrieved it from the provider."""
    return Settled(
        target=A.SUCCEEDED,
        amount=captured_amount(intent, requested),
        currency=str(intent["currency"]).upper(),
        intent_id=intent["id"],
        reason=reason,
    )


class Settlement:
    def __init__(self, db: Database, facts: Facts, gateway: StripeGateway, refunds: Refunds) -> None:
        self.db = db
        self.facts = facts
        self.gateway = gateway
        self.refunds = refunds

    async def prepare(self, attempt_id: uuid.UUID, fact: Settled, cause: CloudEvent) -> Remedy:
        """Steps 1 and 2, each in transactions of their own; nothing when X is the order's only payment."""
        async with self.db.read() as c:
            attempt = await repo.get(c, attempt_id)
            assert attempt is not None
            holder = await repo.payment_holder(c, attempt.order_id, other_than=attempt.id)
        if attempt.duplicate_of is None and holder is None:
            return Remedy()
        async with self.db.transaction() as tx:
            await repo.lock_order(tx, attempt.order_id)
            attempt = await repo.get(tx, attempt_id, lock=True)
            assert attempt is not None
            holder = await repo.payment_holder(tx, attempt.order_id, other_than=attempt.id)
            if attempt.duplicate_of is None and holder is None:
                return Remedy()
            await self._record_duplicate(tx, attempt, holder, fact, cause)
        return await self._give_back(attempt_id, cause)

    async def _record_duplicate(
        self, tx: AsyncConnection, attempt: Row[Any], holder: Row[Any] | None, fact: Settled, cause: CloudEvent
    ) -> None:
        columns: dict[str, Any] = {}
        if attempt.duplicate_of is None:
            assert holder is not None
            columns["duplicate_of"] = holder.id
        if fact.target == A.SUCCEEDED:
            columns["amount_captured"] = fact.amount
        holder_id = attempt.duplicate_of or (holder.id if holder else None)
        moved = await repo.transition(
            tx,
            attempt,
            fact.target,
            reason=f"{fact.reason}; the order's payment is held by attempt {holder_id}",
            event_id=str(cause.id),
            provider_event_id=fact.provider_event_id,
            **columns,
        )
        if moved:
            DUPLICATES.labels(fact.target.value).inc()
            log.warning(
                "second payment for one order",
                attempt_id=str(attempt.id),
                holder_attempt_id=str(holder_id),
                state=fact.target,
                amount=fact.amount,
                currency=fact.currency,
            )
        elif attempt.duplicate_of is None:
            log.error(
                "provider reports money on an attempt the lifecycle cannot take it on",
                attempt_id=str(attempt.id),
                state=attempt.state,
                target=fact.target,
            )
            return
        current = await repo.get(tx, attempt.id)
        assert current is not None
        if current.state == A.SUCCEEDED:
            await self.refunds.record_automatic(tx, current, str(cause.id))

    async def _give_back(self, attempt_id: uuid.UUID, cause: CloudEvent) -> Remedy:
        async with self.db.read() as c:
            attempt = await repo.get(c, attempt_id)
        assert attempt is not None
        if attempt.duplicate_of is None:
            return Remedy()
        if attempt.state == A.SUCCEEDED:
            return Remedy(refusal=await self.refunds.execute(automatic_refund_id(attempt.id)))
        if attempt.state != A.AUTHORIZED:
            return Remedy()
        intent = await self.gateway.close_intent(attempt.provider_intent_id, idempotency_key=cancel_key(attempt.id))
        if intent.status == "canceled":
            return Remedy(released=True)
        if intent.status == "succeeded":
            # captured elsewhere (dashboard) before our cancel landed: a captured duplicate, refunded as one
            fact = settled_from_intent(intent.to_dict(), "captured before its authorization was released")
            async with self.db.transaction() as tx:
                await repo.lock_order(tx, attempt.order_id)
                attempt = await repo.get(tx, attempt_id, lock=True)
                assert attempt is not None
                await self._record_duplicate(tx, attempt, None, fact, cause)
            return await self._give_back(attempt_id, cause)
        raise SettlementRace(f"authorization of duplicate attempt {attempt_id} is {intent.status}")

    async def apply(
        self, conn: AsyncConnection, event: CloudEvent, attempt_id: uuid.UUID, fact: Settled, remedy: Remedy
    ) -> str:
        """Step 3, in the consumer's transaction. Returns applied, refused (the table did not allow it:
        a duplicate delivery) or duplicate."""
        attempt = await repo.get(conn, attempt_id)
        assert attempt is not None
        await repo.lock_order(conn, attempt.order_id)
        attempt = await repo.get(conn, attempt_id, lock=True)
        assert attempt is not None
        if attempt.duplicate_of is not None:
            await self._finish_duplicate(conn, event, attempt, remedy)
            return "duplicate"
        holder = await repo.payment_holder(conn, attempt.order_id, other_than=attempt.id)
        if holder is not None and ATTEMPT_LIFECYCLE.can(AttemptState(attempt.state), fact.target):
            raise SettlementRace(f"attempt {holder.id} took the payment of order {attempt.order_id} first")
        columns: dict[str, Any] = {"amount_captured": fact.amount} if fact.target == A.SUCCEEDED else {}
        reason = fact.reason
        if fact.mismatch_detected_by is not None:
            columns["provider_mismatch"] = {
                "amount": fact.amount,
                "currency": fact.currency,
                "state": fact.target.value,
                "detected_by": fact.mismatch_detected_by,
            }
            reason = (
                f"{fact.reason}; amount mismatch: the provider holds {fact.amount} {fact.currency}, "
                f"the attempt asked {attempt.amount} {attempt.currency}"
            )
        if not await repo.transition(
            conn,
            attempt,
            fact.target,
            reason=reason,
            event_id=str(event.id),
            provider_event_id=fact.provider_event_id,
            **columns,
        ):
            return "refused"
        order_id, attempt_key = str(attempt.order_id), str(attempt.id)
        if fact.mismatch_detected_by is not None:
            log.error(
                "provider amount differs from the attempt",
                attempt_id=attempt_key,
                state=fact.target,
                provider_amount=fact.amount,
                provider_currency=fact.currency,
                requested=attempt.amount,
                requested_currency=attempt.currency,
                detected_by=fact.mismatch_detected_by,
            )
            await self.facts.emit(
                conn,
                "payment.mismatch",
                order_id,
                pay.PaymentMismatch(
                    order_id=order_id,
                    attempt_id=attempt_key,
                    payment_intent_id=fact.intent_id,
                    expected_amount=attempt.amount,
                    expected_currency=attempt.currency,
                    provider_amount=fact.amount,
                    provider_currency=fact.currency,
                    detected_by=fact.mismatch_detected_by,
                    captured=fact.target == A.SUCCEEDED,
                ),
                event,
            )
            return "mismatch"
        await self.facts.emit(
            conn,
            "payment.succeeded" if fact.target == A.SUCCEEDED else "payment.authorized",
            order_id,
            pay.PaymentSucceeded(
                order_id=order_id,
                attempt_id=attempt_key,
                payment_intent_id=fact.intent_id,
                amount=fact.amount,
                currency=fact.currency,
            ),
            event,
        )
        return "applied"

    async def _finish_duplicate(
        self, conn: AsyncConnection, event: CloudEvent, attempt: Row[Any], remedy: Remedy
    ) -> None:
        if attempt.state == A.SUCCEEDED:
            await self.refunds.finish(conn, automatic_refund_id(attempt.id), remedy.refusal, event)
        elif attempt.state == A.AUTHORIZED:
            held_by = f"the order's payment is held by attempt {attempt.duplicate_of}"
            if not remedy.released:
                raise SettlementRace(f"authorization of duplicate attempt {attempt.id} not released yet")
            if await repo.transition(
                conn,
                attempt,
                A.CANCELED,
                reason="authorization of a second attempt released",
                event_id=str(event.id),
                failure_code=DUPLICATE_AUTHORIZATION,
                failure_message=held_by,
            ):
                await self.facts.attempt_ended(
                    conn,
                    "payment.canceled",
                    attempt,
                    intent_id=attempt.provider_intent_id,
                    code=DUPLICATE_AUTHORIZATION,
                    message=held_by,
                    cause=event,
                )
