"""charge.dispute.*: the customer's bank disputes a charge. A fact about money already taken, kept apart from
the attempt lifecycle: the attempt is found by the dispute's payment_intent (else its charge's intent) and
payment.disputed is announced, once per dispute id (provider_disputes, written with the outbox row); the order service puts the order in needs_review. A dispute of an intent we do
not know is counted and parked by the handler (parking.py), never a crash or a dead letter."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.domain import ledger as L
from handshake_payment.publisher import EventPublisher
from handshake_payment.store import attempts as repo
from handshake_payment.store import ledger as ledger_store
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import provider as prov

log = structlog.get_logger("payment")


def disputed_intent(obj: dict[str, Any]) -> str | None:
    """The PaymentIntent a Dispute object names: its payment_intent, else its (expanded) charge's."""
    intent_id = obj.get("payment_intent")
    charge = obj.get("charge")
    if isinstance(intent_id, dict):
        intent_id = intent_id.get("id")
    if not intent_id and isinstance(charge, dict):
        intent_id = charge.get("payment_intent")
    return str(intent_id) if intent_id else None


class Disputes:
    def __init__(self, db: Database, publisher: EventPublisher) -> None:
        self.db = db
        self.publisher = publisher

    async def on_dispute(self, conn: AsyncConnection, event: CloudEvent, p: prov.ProviderStripeEvent) -> str:
        obj: dict[str, Any] = p.object
        dispute_id = str(obj.get("id") or p.object_id or "")
        intent_id = disputed_intent(obj)
        attempt = await repo.by_intent(conn, intent_id) if intent_id else None
        if attempt is None:
            outcome = "unmatched" if intent_id else "incomplete"
            metrics.DISPUTES.labels(p.provider_type, outcome).inc()
            log.error(
                "dispute of a payment we cannot match",
                provider_event_id=p.provider_event_id,
                dispute_id=dispute_id,
                payment_intent_id=intent_id,
                amount=obj.get("amount"),
                currency=obj.get("currency"),
                reason=obj.get("reason"),
            )
            return outcome
        ledger = await ledger_store.load(conn, attempt.order_id, disputes=True)
        amount = obj.get("amount")
        decision = L.dispute(
            ledger,
            attempt.id,
            dispute_id=dispute_id,
            intent_id=str(intent_id),
            amount=int(amount) if amount is not None else None,
            currency=obj.get("currency"),
            reason=obj.get("reason"),
            status=obj.get("status"),
        )
        if decision.outcome == "refused":
            metrics.DISPUTES.labels(p.provider_type, "duplicate").inc()
            log.info("dispute already announced", dispute_id=dispute_id, provider_event_id=p.provider_event_id)
            return "refused"
        await ledger_store.apply(conn, ledger, decision, event, self.publisher, provider_event_id=p.provider_event_id)
        metrics.DISPUTES.labels(p.provider_type, "announced").inc()
        log.warning("payment disputed", attempt_id=str(attempt.id), dispute_id=dispute_id, status=obj.get("status"))
        return "applied"
