"""order.cancelled / order.expired: no attempt of the order may take money any more.

  1. in its own transaction under the order lock: attempts still `creating` without an intent are
     cancelled, so no handler creates one later (the creation lease requires `creating`) and a handler
     already calling Stripe cancels what it gets (intents.py);
  2. with no transaction of ours open: every attempt whose intent may still be open is looked at the
     provider and cancelled there if Stripe still allows it. An intent that was paid meanwhile is not
     cancelled: it is a success like any other (holding.py; a late payment is the order's business);
  3. in the consumer's transaction under the order lock: the cancellations and successes, with their facts.

Redelivery finds the attempts cancelled and does nothing; a crash after 2 finds the intents cancelled at the
provider and records them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.domain import ledger as L
from handshake_payment.domain.ledger import Settled
from handshake_payment.domain.recovery import FINISHED
from handshake_payment.payments.holding import Holding, Remedy, settled_from_intent
from handshake_payment.phases import Phase, Phases
from handshake_payment.publisher import EventPublisher
from handshake_payment.store import ledger as ledger_store
from handshake_payment.stripe_gateway import StripeGateway
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import order as o

log = structlog.get_logger("payment")


@dataclass(frozen=True)
class _Closed:
    attempt_id: uuid.UUID
    intent_id: str
    paid: Settled | None = None
    remedy: Remedy | None = None


@dataclass(frozen=True)
class _Closing:
    order_id: uuid.UUID
    why: str
    reason: str
    event: CloudEvent
    point: str = "requested"
    closed: tuple[_Closed, ...] = ()


class Cancel:
    def __init__(self, db: Database, publisher: EventPublisher, gateway: StripeGateway, holding: Holding) -> None:
        self.db = db
        self.publisher = publisher
        self.gateway = gateway
        self.holding = holding
        # steps 1 and 2; their points are what the rows and the provider already say, so a redelivery runs
        # the table again from the top (every step is idempotent under its key)
        self.closing = Phases[_Closing](
            ("requested", "unborn_cancelled", "closed_at_provider", FINISHED),
            Phase("unborn_cancelled", self._unborn_cancelled),
            Phase("closed_at_provider", self._closed_at_provider),
        )

    async def on_order_closed(self, conn: AsyncConnection, event: CloudEvent, p: o.OrderStateChanged) -> None:
        order_id = p.order_id
        why = "order_expired" if isinstance(p, o.OrderExpired) else "order_cancelled"
        done = await self.closing.prepare(_Closing(order_id, why, p.reason, event), lambda c: c.point)
        for c in done.closed:  # apply, in the consumer's transaction
            if c.paid is not None:
                assert c.remedy is not None
                await self.holding.apply(conn, event, c.attempt_id, c.paid, c.remedy)
                continue
            ledger = await ledger_store.load(conn, order_id)
            decision = L.intent_cancelled(ledger, c.attempt_id, why, p.reason)
            await ledger_store.apply(conn, ledger, decision, event, self.publisher)

    async def _unborn_cancelled(self, c: _Closing) -> _Closing:
        await self._cancel_unborn(c.order_id, c.why, c.reason, c.event)
        return replace(c, point="unborn_cancelled")

    async def _closed_at_provider(self, c: _Closing) -> _Closing:
        closed = await self._close_at_provider(c.order_id, c.why, c.reason, c.event)
        return replace(c, point="closed_at_provider", closed=tuple(closed))

    async def _cancel_unborn(self, order_id: uuid.UUID, why: str, reason: str, event: CloudEvent) -> None:
        """Step 1: its own transaction, so the cancel is visible to creators before any provider call."""
        async with self.db.transaction() as tx:
            ledger = await ledger_store.load(tx, order_id)
            decision = L.close_order(ledger, why, reason)
            decision.calls.clear()  # step 2's, made once this transaction has committed
            await ledger_store.apply(tx, ledger, decision, event, self.publisher)
        for _ in decision.moves:
            metrics.ORDER_CLOSE_ATTEMPTS.labels("never_created").inc()

    async def _close_at_provider(self, order_id: uuid.UUID, why: str, reason: str, event: CloudEvent) -> list[_Closed]:
        """Step 2: provider calls, no transaction of ours open."""
        async with self.db.read() as c:
            ledger = await ledger_store.load(c, order_id, lock=False)
        closed: list[_Closed] = []
        for call in L.close_order(ledger, why, reason).calls:
            attempt = ledger.attempt(call.subject)
            assert attempt.intent_id is not None
            intent = await self.gateway.close_intent(attempt.intent_id, idempotency_key=call.idempotency_key)
            if intent.status == "canceled":
                metrics.ORDER_CLOSE_ATTEMPTS.labels("canceled").inc()
                closed.append(_Closed(attempt.id, intent.id))
            elif intent.status == "succeeded":
                metrics.ORDER_CLOSE_ATTEMPTS.labels("paid").inc()
                log.warning("payment landed before the order closed", attempt_id=str(attempt.id), why=why)
                paid = settled_from_intent(intent.to_dict(), f"paid at the provider before the {why.replace('_', ' ')}")
                remedy = await self.holding.prepare(attempt.id, paid, event)
                closed.append(_Closed(attempt.id, intent.id, paid, remedy))
            else:
                # processing: Stripe cannot cancel it; its webhook says how it ends
                metrics.ORDER_CLOSE_ATTEMPTS.labels("processing").inc()
                log.warning(
                    "payment still settling when the order closed", attempt_id=str(attempt.id), status=intent.status
                )
        return closed
