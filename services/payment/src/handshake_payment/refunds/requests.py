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
from dataclasses import dataclass

import stripe
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import leases, metrics
from handshake_payment.domain import ledger as L
from handshake_payment.domain.recovery import RefundPoint
from handshake_payment.domain.refunds import RefundState
from handshake_payment.phases import Phase, Phases
from handshake_payment.publisher import EventPublisher
from handshake_payment.store import ledger as ledger_store
from handshake_payment.store import refunds as refund_repo
from handshake_payment.stripe_gateway import Refusal, StripeGateway, is_permanent, refusal_of
from handshake_shared.consumer import PoisonMessage
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import order as o
from handshake_shared.money import CurrencyError, check_currency

log = structlog.get_logger("payment")


class RefundPending(Exception):
    """Another handler holds the refund's provider call; the consumer retries later."""


def _kind(refund: refund_repo.RefundRow | L.Refund) -> str:
    return "automatic" if refund.automatic else "requested"


@dataclass(frozen=True)
class _Refunding:
    row: refund_repo.RefundRow
    refusal: Refusal | None = None  # the provider refused the refund


class Refunds:
    def __init__(self, db: Database, publisher: EventPublisher, gateway: StripeGateway, lease_seconds: float) -> None:
        self.db = db
        self.publisher = publisher
        self.gateway = gateway
        self.lease_seconds = lease_seconds
        # the row itself is the first phase (request(), or the duplicate mark for an automatic refund)
        self.phases = Phases[_Refunding](
            list(RefundPoint), Phase(RefundPoint.PROVIDER_REFUNDED, self._provider_refunded)
        )

    async def on_refund_requested(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderRefundRequested) -> None:
        refund_id = await self.request(event, p)
        refusal = await self.execute(refund_id)
        await self.finish(conn, refund_id, refusal, event)

    # -- phase 1 --------------------------------------------------------------------------------

    async def request(self, event: CloudEvent, p: o.OrderRefundRequested) -> uuid.UUID:
        """Recovery point 1: the refund row exists (requested, or failed and announced)."""
        refund_id, order_id = p.refund_id, p.order_id
        try:
            currency = check_currency(p.currency)
        except CurrencyError as exc:
            raise PoisonMessage(f"unusable refund request: {exc}") from None
        async with self.db.transaction() as tx:
            ledger = await ledger_store.load(tx, order_id)
            decision = L.request_refund(
                ledger, refund_id, amount=p.amount, currency=currency, reason=p.reason, requested_by=p.requested_by
            )
            if decision.outcome == "poison":
                raise PoisonMessage(decision.detail)
            await ledger_store.apply(tx, ledger, decision, event, self.publisher)
        if decision.outcome == "refused":
            metrics.REFUNDS.labels("rejected", "requested").inc()
            log.warning("refund refused", refund_id=str(refund_id), detail=decision.detail)
        return refund_id

    # -- phase 2 --------------------------------------------------------------------------------

    async def execute(self, refund_id: uuid.UUID) -> Refusal | None:
        """Prepare, from the refund's recovery point on. Returns the provider's refusal, which finish()
        records; None when there is nothing (more) to do here."""
        async with self.db.read() as c:
            row = await refund_repo.get(c, refund_id)
        if row is None:
            return None
        done = await self.phases.prepare(_Refunding(row), lambda r: r.row.recovery_point)
        return done.refusal

    async def _provider_refunded(self, r: _Refunding) -> _Refunding:
        return _Refunding(r.row, await self._refund_at_provider(r.row.id))

    async def _refund_at_provider(self, refund_id: uuid.UUID) -> Refusal | None:
        """recorded -> provider_refunded: the provider refund exists and its id is stored."""
        async with self.db.read() as c:
            ledger = await ledger_store.load_for_refund(c, refund_id, lock=False)
        calls = L.execute_refund(ledger, refund_id).calls if ledger is not None else []
        if not calls:
            return None
        assert ledger is not None
        refund = ledger.refund(refund_id)
        assert refund is not None and refund.attempt_id is not None
        attempt = ledger.attempt(refund.attempt_id)
        assert attempt.intent_id is not None
        lease = self._lease(refund_id)
        if not await lease.acquire():
            return None
        try:
            made = await self.gateway.find_refund(attempt.intent_id, str(refund_id))
            recovered = made is not None
            if made is None:
                made, recovered = await self._create(refund, attempt.intent_id, calls[0].idempotency_key)
        except stripe.StripeError as exc:
            await lease.release()
            if not is_permanent(exc):
                raise
            log.warning("provider refused the refund", refund_id=str(refund_id), code=exc.code)
            return refusal_of(exc)
        except BaseException:
            await lease.release()
            raise
        if made.status in ("failed", "canceled"):
            # not stored: a redelivery finds the same failed refund by its metadata and refuses again
            await lease.release()
            return Refusal(code=f"refund_{made.status}", message=f"provider refund {made.id} {made.status}")
        async with self.db.transaction() as tx:
            stored = await refund_repo.store_provider_refund(tx, refund_id, made.id)
        if not stored:
            metrics.LOST_REFUND_LEASES.inc()
            log.error("second provider refund for one refund", refund_id=str(refund_id), orphan_refund=made.id)
        elif recovered:
            metrics.REFUNDS.labels("recovered", _kind(refund)).inc()
            log.warning(
                "provider refund found after a lost answer", refund_id=str(refund_id), provider_refund_id=made.id
            )
        return None

    async def _create(self, refund: L.Refund, intent_id: str, key: str) -> tuple[stripe.Refund, bool]:
        """Create the provider refund; when the answer is lost (timeout, severed connection, 5xx) the
        provider may have refunded anyway, so look for it by metadata before letting the error retry."""
        try:
            made = await self.gateway.create_refund(
                intent_id=intent_id,
                amount=refund.amount,
                order_id=str(refund.order_id),
                refund_id=str(refund.id),
                idempotency_key=key,
            )
            return made, False
        except stripe.StripeError as exc:
            if is_permanent(exc):
                raise
            found = await self.gateway.find_refund(intent_id, str(refund.id))
            if found is None:
                raise
            return found, True

    def _lease(self, refund_id: uuid.UUID) -> leases.Lease:
        async def still_needed(c: AsyncConnection) -> bool:
            current = await refund_repo.get(c, refund_id)
            return current is not None and current.state == RefundState.REQUESTED and current.provider_refund_id is None

        return leases.Lease(
            self.db,
            self.lease_seconds,
            take=lambda tx: refund_repo.lease_provider_call(tx, refund_id, self.lease_seconds),
            release=lambda tx: refund_repo.release_lease(tx, refund_id),
            still_needed=still_needed,
            busy=lambda: RefundPending(f"refund {refund_id} is with another handler"),
            what=f"refund {refund_id}",
        )

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
        ledger = await ledger_store.load_for_refund(conn, refund_id)
        assert ledger is not None
        decision = L.finish_refund(ledger, refund_id, (refusal.code, refusal.message) if refusal else None, via=via)
        if decision.outcome == "pending":
            raise RefundPending(decision.detail)
        await ledger_store.apply(conn, ledger, decision, cause, self.publisher)
        self.count_finished(ledger, decision)

    def count_finished(self, ledger: L.Ledger, decision: L.Decision) -> None:
        for move in decision.refund_moves:
            refund = ledger.refund(move.refund_id)
            assert refund is not None
            if move.target == RefundState.SUCCEEDED:
                metrics.REFUNDS.labels("succeeded", _kind(refund)).inc()
                continue
            metrics.REFUNDS.labels("failed", _kind(refund)).inc()
            if refund.automatic:
                log.error(
                    "automatic refund of a second capture refused: the customer paid twice",
                    refund_id=str(refund.id),
                    attempt_id=str(refund.attempt_id),
                    code=move.failure_code,
                )
