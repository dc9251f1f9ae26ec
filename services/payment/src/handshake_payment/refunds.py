"""Refunds: the order's refund requests (order.refund_requested) and payment's own automatic refunds of a
second capture. Three phases, each ending at a recovery point:

  1. the refund row, keyed by the refund id, committed in its own transaction once the guard passed under
     the order lock and the captured attempt's row lock: the refunds of a capture that have not failed,
     plus this one, never exceed what was captured. A refused request is recorded failed and announced in
     that same transaction (payment.refund_failed);
  2. the provider refund, with no transaction of ours open on the refund: first looked for at the provider
     by metadata.refund_id, because a crash after Stripe refunded but before we stored its id must not
     refund twice (localstripe ignores idempotency keys and Stripe forgets them after 24 hours); only when
     none exists, created with an idempotency key from the refund id. Its id is committed at once in its
     own transaction;
  3. succeeded + payment.refunded (or failed + payment.refund_failed when the provider refused), in the
     consumer's transaction.

Timeouts and 5xx raise: the consumer retries, and phase 2 then finds what the lost call did."""

from __future__ import annotations

import uuid
from typing import Any

import stripe
import structlog
from prometheus_client import Counter
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import leases
from handshake_payment import refund_repository as refund_repo
from handshake_payment import repository as repo
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.refunds import DUPLICATE_CAPTURE, RefundState, automatic_refund_id, refusal_reason
from handshake_payment.facts import Facts
from handshake_payment.stripe_gateway import Refusal, StripeGateway, is_permanent, refusal_of
from handshake_shared.consumer import PoisonMessage
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import order as o
from handshake_shared.events import payment as pay
from handshake_shared.money import CurrencyError, check_currency

log = structlog.get_logger("payment")

REFUNDS = Counter(
    "handshake_payment_refunds_total",
    "Refunds by outcome (succeeded; failed: refused by the provider; rejected: refused by our guard before any "
    "provider call; recovered: found already made at the provider after a lost answer) and kind (requested, "
    "automatic)",
    ["outcome", "kind"],
)
LOST_REFUND_LEASES = Counter(
    "handshake_payment_refund_lease_lost_total",
    "Provider refunds made after another handler had already stored one for the same refund",
)


class RefundPending(Exception):
    """Another handler holds the refund's provider call; the consumer retries later."""


def _kind(refund: Row[Any]) -> str:
    return "automatic" if refund.automatic else "requested"


def idempotency_key(refund_id: uuid.UUID) -> str:
    return f"refund-{refund_id}"


class Refunds:
    def __init__(self, db: Database, facts: Facts, gateway: StripeGateway, lease_seconds: float) -> None:
        self.db = db
        self.facts = facts
        self.gateway = gateway
        self.lease_seconds = lease_seconds

    async def on_refund_requested(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderRefundRequested) -> None:
        refund_id = await self.request(event, p)
        refusal = await self.execute(refund_id)
        await self.finish(conn, refund_id, refusal, event)

    # -- phase 1 --------------------------------------------------------------------------------

    async def request(self, event: CloudEvent, p: o.OrderRefundRequested) -> uuid.UUID:
        """Recovery point 1: the refund row exists (requested, or failed and announced)."""
        try:
            refund_id, order_id = uuid.UUID(p.refund_id), uuid.UUID(p.order_id)
            currency = check_currency(p.currency)
        except (ValueError, CurrencyError) as exc:
            raise PoisonMessage(f"unusable refund request: {exc}") from None
        async with self.db.transaction() as tx:
            await repo.lock_order(tx, order_id)
            existing = await refund_repo.get(tx, refund_id)
            if existing is not None:
                if (existing.order_id, existing.amount, existing.currency) != (order_id, p.amount, currency):
                    raise PoisonMessage(
                        f"refund {refund_id} was {existing.amount} {existing.currency} for order {existing.order_id}, "
                        f"now {p.amount} {currency} for order {order_id}"
                    )
                return refund_id
            holder = await repo.payment_holder(tx, order_id)
            captured = await repo.get(tx, holder.id, lock=True) if holder and holder.state == A.SUCCEEDED else None
            refused = refusal_reason(
                captured=_captured(captured),
                captured_currency=captured.currency if captured else None,
                already_refunded=await refund_repo.committed_amount(tx, captured.id) if captured else 0,
                amount=p.amount,
                currency=currency,
            )
            await refund_repo.insert_refund(
                tx,
                refund_id=refund_id,
                order_id=order_id,
                attempt_id=captured.id if captured else None,
                amount=p.amount,
                currency=currency,
                reason=p.reason,
                automatic=False,
                requested_by=p.requested_by,
                state=RefundState.FAILED if refused else RefundState.REQUESTED,
                event_id=str(event.id),
                failure_code=refused[0] if refused else None,
                failure_message=refused[1] if refused else None,
            )
            if refused:
                REFUNDS.labels("rejected", "requested").inc()
                log.warning("refund refused", refund_id=str(refund_id), code=refused[0], detail=refused[1])
                await self.facts.emit(
                    tx,
                    "payment.refund_failed",
                    str(order_id),
                    pay.PaymentRefundFailed(
                        order_id=str(order_id),
                        refund_id=str(refund_id),
                        amount=p.amount,
                        currency=currency,
                        reason=f"{refused[0]}: {refused[1]}",
                    ),
                    event,
                )
        return refund_id

    async def record_automatic(self, tx: AsyncConnection, attempt: Row[Any], event_id: str) -> None:
        """Phase 1 of payment's own refund of a second capture, inside the transaction that marked the
        attempt a duplicate (so a crash right after still knows the money must go back)."""
        amount = _captured(attempt)
        if not amount:
            return
        await refund_repo.insert_refund(
            tx,
            refund_id=automatic_refund_id(attempt.id),
            order_id=attempt.order_id,
            attempt_id=attempt.id,
            amount=amount,
            currency=attempt.currency,
            reason=DUPLICATE_CAPTURE,
            automatic=True,
            requested_by="payment-service",
            state=RefundState.REQUESTED,
            event_id=event_id,
        )

    # -- phase 2 --------------------------------------------------------------------------------

    async def execute(self, refund_id: uuid.UUID) -> Refusal | None:
        """Recovery point 2: the provider refund exists and its id is stored. Returns the provider's refusal,
        which phase 3 records; None when there is nothing (more) to do here."""
        async with self.db.read() as c:
            refund = await refund_repo.get(c, refund_id)
            attempt = await repo.get(c, refund.attempt_id) if refund is not None and refund.attempt_id else None
        if refund is None or refund.state != RefundState.REQUESTED or refund.provider_refund_id is not None:
            return None
        assert attempt is not None and attempt.provider_intent_id is not None
        if not await self._take_lease(refund_id):
            return None
        try:
            made = await self.gateway.find_refund(attempt.provider_intent_id, str(refund_id))
            recovered = made is not None
            if made is None:
                made, recovered = await self._create(refund, attempt.provider_intent_id)
        except stripe.StripeError as exc:
            await self._release_lease(refund_id)
            if not is_permanent(exc):
                raise
            log.warning("provider refused the refund", refund_id=str(refund_id), code=exc.code)
            return refusal_of(exc)
        except BaseException:
            await self._release_lease(refund_id)
            raise
        if made.status in ("failed", "canceled"):
            # not stored: a redelivery finds the same failed refund by its metadata and refuses again
            await self._release_lease(refund_id)
            return Refusal(code=f"refund_{made.status}", message=f"provider refund {made.id} {made.status}")
        async with self.db.transaction() as tx:
            stored = await refund_repo.store_provider_refund(tx, refund_id, made.id)
        if not stored:
            LOST_REFUND_LEASES.inc()
            log.error("second provider refund for one refund", refund_id=str(refund_id), orphan_refund=made.id)
        elif recovered:
            REFUNDS.labels("recovered", _kind(refund)).inc()
            log.warning(
                "provider refund found after a lost answer", refund_id=str(refund_id), provider_refund_id=made.id
            )
        return None

    async def _create(self, refund: Row[Any], intent_id: str) -> tuple[stripe.Refund, bool]:
        """Create the provider refund; when the answer is lost (timeout, severed connection, 5xx) the
        provider may have refunded anyway, so look for it by metadata before letting the error retry."""
        try:
            made = await self.gateway.create_refund(
                intent_id=intent_id,
                amount=refund.amount,
                order_id=str(refund.order_id),
                refund_id=str(refund.id),
                idempotency_key=idempotency_key(refund.id),
            )
            return made, False
        except stripe.StripeError as exc:
            if is_permanent(exc):
                raise
            found = await self.gateway.find_refund(intent_id, str(refund.id))
            if found is None:
                raise
            return found, True

    async def _take_lease(self, refund_id: uuid.UUID) -> bool:
        async def take() -> bool:
            async with self.db.transaction() as tx:
                return await refund_repo.lease_provider_call(tx, refund_id, self.lease_seconds)

        async def still_needed() -> bool:
            async with self.db.read() as c:
                current = await refund_repo.get(c, refund_id)
            return current is not None and current.state == RefundState.REQUESTED and current.provider_refund_id is None

        return await leases.acquire(
            take,
            still_needed,
            lease_seconds=self.lease_seconds,
            busy=lambda: RefundPending(f"refund {refund_id} is with another handler"),
        )

    async def _release_lease(self, refund_id: uuid.UUID) -> None:
        try:
            async with self.db.transaction() as tx:
                await refund_repo.release_lease(tx, refund_id)
        except Exception as exc:
            log.warning("could not release refund lease", refund_id=str(refund_id), error=repr(exc))

    # -- phase 3 --------------------------------------------------------------------------------

    async def finish(
        self,
        conn: AsyncConnection,
        refund_id: uuid.UUID,
        refusal: Refusal | None,
        cause: CloudEvent,
        *,
        via: str | None = None,
    ) -> None:
        """In the consumer's transaction: the refund's outcome and the fact that announces it, once."""
        refund = await refund_repo.get(conn, refund_id)
        assert refund is not None
        await repo.lock_order(conn, refund.order_id)
        refund = await refund_repo.get(conn, refund_id, lock=True)
        assert refund is not None
        if refund.state != RefundState.REQUESTED:
            return
        order_id = str(refund.order_id)
        if refusal is not None:
            code = refusal.code or "refund_refused"
            if await refund_repo.transition(
                conn,
                refund,
                RefundState.FAILED,
                reason=_via(via, f"provider refused: {code}"),
                event_id=str(cause.id),
                failure_code=code,
                failure_message=refusal.message,
            ):
                REFUNDS.labels("failed", _kind(refund)).inc()
                if refund.automatic:
                    log.error(
                        "automatic refund of a second capture refused: the customer paid twice",
                        refund_id=str(refund_id),
                        attempt_id=str(refund.attempt_id),
                        code=code,
                    )
                await self.facts.emit(
                    conn,
                    "payment.refund_failed",
                    order_id,
                    pay.PaymentRefundFailed(
                        order_id=order_id,
                        refund_id=str(refund.id),
                        amount=refund.amount,
                        currency=refund.currency,
                        reason=f"{code}: {refusal.message or ''}",
                    ),
                    cause,
                )
            return
        if refund.provider_refund_id is None:
            raise RefundPending(f"refund {refund_id} has no provider refund yet")
        attempt = await repo.get(conn, refund.attempt_id)
        assert attempt is not None
        if await refund_repo.transition(
            conn,
            refund,
            RefundState.SUCCEEDED,
            reason=_via(via, f"provider refund {refund.provider_refund_id}"),
            event_id=str(cause.id),
        ):
            REFUNDS.labels("succeeded", _kind(refund)).inc()
            await self.facts.emit(
                conn,
                "payment.refunded",
                order_id,
                pay.PaymentRefunded(
                    order_id=order_id,
                    refund_id=str(refund.id),
                    attempt_id=str(attempt.id),
                    payment_intent_id=attempt.provider_intent_id,
                    provider_refund_id=refund.provider_refund_id,
                    amount=refund.amount,
                    currency=refund.currency,
                    reason=refund.reason,
                    automatic=refund.automatic,
                ),
                cause,
            )


def _captured(attempt: Row[Any] | None) -> int | None:
    if attempt is None:
        return None
    return attempt.amount_captured if attempt.amount_captured is not None else attempt.amount


def _via(via: str | None, reason: str) -> str:
    return f"{via}: {reason}" if via else reason
