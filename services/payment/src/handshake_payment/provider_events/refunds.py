"""Refunds made at the provider outside Handshake (the Stripe dashboard, Stripe support): charge.refunded
(a Charge with its refunds), refund.created and refund.updated (a Refund).

Each succeeded provider refund that is not ours (no metadata.refund_id: ours are finished by refunds/requests.py)
and whose id no refund row holds is recorded on the captured attempt of its PaymentIntent, as a succeeded
refund (requested_by "provider", not automatic, provider_refund_id set), and announced as payment.refunded
in the consumer's transaction, under the order lock and the attempt's row lock (the same guard as
refunds/requests.py). Once per provider refund id: the row id is derived from it and the unique index on
provider_refund_id holds against a redelivery, a replay past the inbox, or charge.refunded and
refund.created both naming it. Recorded refunds never sum above the capture: one that would is logged and
counted (exceeds_capture), never recorded. An event about an intent no attempt knows is parked by the
handler (unmatched), like any provider fact.

A refund can also fail after the provider accepted it (refund.failed, or refund.updated /
charge.refund.updated with status failed or canceled): the money went back to the merchant's balance.
Whichever row recorded it as succeeded (ours or one made at the provider) becomes `reversed`, once, and
payment.refund_reversed tells the order that the customer did not get that money back."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.domain import ledger as L
from handshake_payment.domain.refunds import RefundState
from handshake_payment.publisher import EventPublisher
from handshake_payment.store import attempts as repo
from handshake_payment.store import ledger as ledger_store
from handshake_payment.store import refunds as refund_repo
from handshake_shared.consumer import PoisonMessage
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import provider as prov

log = structlog.get_logger("payment")

PROVIDER_REFUND_TYPES = (
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
)
REVERSED_STATUSES = ("failed", "canceled")


_NAMESPACE = uuid.UUID("5b0f3c2e-7d41-5e8a-b6c9-2a1e4f7d9c03")


class RefundBeforeCapture(PoisonMessage):
    """A provider refund of an attempt we have not seen captured: nothing to count it against. Dead-lettered
    (support replays it once the payment is applied); a parked one is logged as unusable."""


def provider_refund_row_id(provider_refund_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"provider-refund:{provider_refund_id}")


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return str(value) if value else None


def refunded_intent(provider_type: str, obj: dict[str, Any]) -> str | None:
    """The PaymentIntent a Charge or Refund object names (a Refund's, else its expanded charge's)."""
    intent_id = _id(obj.get("payment_intent"))
    charge = obj.get("charge")
    if not intent_id and isinstance(charge, dict):
        intent_id = _id(charge.get("payment_intent"))
    return intent_id


def provider_refunds(provider_type: str, obj: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The refunds an event carries; None when a Charge came without its refunds list."""
    if provider_type != "charge.refunded":
        return [obj]  # a Refund object (refund.* and charge.refund.updated)
    listed = obj.get("refunds")
    if not isinstance(listed, dict) or not isinstance(listed.get("data"), list):
        return None
    if listed.get("has_more"):
        log.warning("charge.refunded lists only part of its refunds", charge_id=obj.get("id"))
    refunds = [r for r in listed["data"] if isinstance(r, dict)]
    return [{**r, "currency": r.get("currency") or obj.get("currency")} for r in refunds]


class ProviderRefunds:
    def __init__(self, publisher: EventPublisher) -> None:
        self.publisher = publisher

    async def on_refund_event(self, conn: AsyncConnection, event: CloudEvent, p: prov.ProviderStripeEvent) -> str:
        """applied (at least one refund recorded), refused (nothing new), unmatched (intent unknown: the
        caller parks it) or incomplete (no intent or no refunds named)."""
        obj: dict[str, Any] = p.object
        intent_id = refunded_intent(p.provider_type, obj)
        refunds = provider_refunds(p.provider_type, obj)
        if not intent_id or refunds is None:
            log.error(
                "provider refund event without intent or refunds",
                provider_event_id=p.provider_event_id,
                provider_type=p.provider_type,
                object_id=obj.get("id"),
            )
            return "incomplete"
        reversed_ = await self._reversals(conn, event, intent_id, refunds)
        candidates = [r for r in refunds if self._candidate(r)]
        attempt = await repo.by_intent(conn, intent_id)
        if attempt is None:
            return "applied" if reversed_ else "unmatched"
        if not candidates:
            return "applied" if reversed_ else "refused"
        ledger = await ledger_store.load(conn, attempt.order_id)
        if ledger.attempt(attempt.id).state != L.A.SUCCEEDED:
            raise RefundBeforeCapture(
                f"{p.provider_event_id}: provider refund of attempt {attempt.id} in state {attempt.state}"
            )
        recorded = 0
        for refund in candidates:
            ledger, made = await self._record(conn, event, p, ledger, attempt.id, refund)
            recorded += made
        return "applied" if recorded else "refused"

    async def _reversals(
        self, conn: AsyncConnection, event: CloudEvent, intent_id: str, refunds: list[dict[str, Any]]
    ) -> int:
        """Refunds we hold as succeeded that the provider now reports failed or canceled."""
        done = 0
        for refund in refunds:
            provider_refund_id = _id(refund.get("id"))
            if not provider_refund_id or refund.get("status") not in REVERSED_STATUSES:
                continue
            row = await refund_repo.by_provider_refund(conn, provider_refund_id)
            if row is None or row.state != RefundState.SUCCEEDED:
                continue  # never counted (still requested: the refund path sees the failure), or done before
            ledger = await ledger_store.load(conn, row.order_id)
            why = str(refund.get("failure_reason") or refund.get("status"))
            decision = L.refund_reversed(
                ledger, provider_refund_id, status=str(refund.get("status")), why=why, intent_id=intent_id
            )
            if decision.outcome != "applied":
                continue
            await ledger_store.apply(conn, ledger, decision, event, self.publisher)
            metrics.REFUND_REVERSALS.inc()
            log.error(
                "refund failed after the provider had accepted it: the customer did not get the money",
                refund_id=str(row.id),
                provider_refund_id=provider_refund_id,
                amount=row.amount,
                reason=why,
            )
            done += 1
        return done

    @staticmethod
    def _candidate(refund: dict[str, Any]) -> bool:
        if not refund.get("id"):
            return False
        if (refund.get("metadata") or {}).get("refund_id"):
            metrics.PROVIDER_REFUNDS.labels("ours").inc()
            return False
        if refund.get("status") in REVERSED_STATUSES:
            metrics.PROVIDER_REFUNDS.labels("failed").inc()  # a reversal, if it had been recorded (_reversals)
            return False
        if refund.get("status") != "succeeded":
            metrics.PROVIDER_REFUNDS.labels("pending").inc()
            return False
        return True

    async def _record(
        self,
        conn: AsyncConnection,
        event: CloudEvent,
        p: prov.ProviderStripeEvent,
        ledger: L.Ledger,
        attempt_id: uuid.UUID,
        refund: dict[str, Any],
    ) -> tuple[L.Ledger, int]:
        provider_refund_id = str(refund["id"])
        amount = int(refund.get("amount") or 0)
        attempt = ledger.attempt(attempt_id)
        decision = L.refund_at_provider(
            ledger,
            attempt_id,
            provider_refund_row_id(provider_refund_id),
            provider_refund_id=provider_refund_id,
            amount=amount,
            currency=str(refund.get("currency") or attempt.currency).upper(),
        )
        if decision.outcome != "applied":
            metrics.PROVIDER_REFUNDS.labels(decision.outcome).inc()
            if decision.outcome != "known":
                log.error(
                    "provider refund not recorded",
                    outcome=decision.outcome,
                    attempt_id=str(attempt_id),
                    provider_refund_id=provider_refund_id,
                    amount=amount,
                    committed=ledger.committed(attempt_id),
                    captured=attempt.captured,
                    detail=decision.detail,
                    provider_event_id=p.provider_event_id,
                )
            return ledger, 0
        await ledger_store.apply(conn, ledger, decision, event, self.publisher)
        metrics.PROVIDER_REFUNDS.labels("recorded").inc()
        log.warning(
            "refund made at the provider recorded",
            attempt_id=str(attempt_id),
            provider_refund_id=provider_refund_id,
            amount=amount,
        )
        return L.evolve(ledger, decision), 1
