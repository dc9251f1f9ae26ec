"""The one writer of ledger decisions: an order's view read under its lock, and a Decision written in the
caller's transaction (attempt and refund transitions with their audit rows, new refund and dispute rows, the
outbox events). The view was read under the order lock and the rows' locks, so a write the view did not
foresee means someone changed the rows without the lock: LedgerConflict rolls the transaction back and the
consumer retries on a fresh view."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment.db import payment_attempts, provider_disputes, refunds
from handshake_payment.domain.attempts import AttemptState
from handshake_payment.domain.ledger import Attempt, Decision, Ledger, Refund
from handshake_payment.domain.recovery import CancelPoint, CapturePoint, GiveBackPoint
from handshake_payment.domain.refunds import RefundState
from handshake_payment.publisher import EventPublisher
from handshake_payment.store import attempts as repo
from handshake_payment.store import refunds as refund_repo
from handshake_shared.envelope import CloudEvent


class LedgerConflict(Exception):
    """The rows moved under a decision made on a locked view; the consumer retries."""


def attempt_view(row: Any) -> Attempt:
    return Attempt(
        id=row.id,
        order_id=row.order_id,
        state=AttemptState(row.state),
        amount=row.amount,
        currency=row.currency,
        intent_id=row.provider_intent_id,
        amount_captured=row.amount_captured,
        duplicate_of=row.duplicate_of,
        capture_point=CapturePoint(row.capture_point) if row.capture_point else None,
        capture_amount=row.capture_amount,
        cancel_point=CancelPoint(row.cancel_point) if row.cancel_point else None,
        cancel_code=row.cancel_code,
        cancel_reason=row.cancel_reason,
        give_back_point=GiveBackPoint(row.give_back_point) if row.give_back_point else None,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
    )


def refund_view(row: Any) -> Refund:
    return Refund(
        id=row.id,
        order_id=row.order_id,
        attempt_id=row.attempt_id,
        amount=row.amount,
        currency=row.currency,
        state=RefundState(row.state),
        reason=row.reason,
        automatic=row.automatic,
        requested_by=row.requested_by,
        provider_refund_id=row.provider_refund_id,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
    )


async def load(conn: AsyncConnection, order_id: uuid.UUID, *, lock: bool = True, disputes: bool = False) -> Ledger:
    """The order's ledger. Locked (the default): after the order lock, its rows locked, the order every
    writer takes them in; unlocked, a look that decides what to ask the provider, never what to write."""
    if lock:
        await repo.lock_order(conn, order_id)
    attempt_query = (
        select(payment_attempts)
        .where(payment_attempts.c.order_id == order_id)
        .order_by(payment_attempts.c.created_at, payment_attempts.c.id)
    )
    refund_query = select(refunds).where(refunds.c.order_id == order_id).order_by(refunds.c.created_at, refunds.c.id)
    if lock:
        attempt_query, refund_query = attempt_query.with_for_update(), refund_query.with_for_update()
    attempts = tuple(attempt_view(a) for a in await conn.execute(attempt_query))
    refund_views = tuple(refund_view(r) for r in await conn.execute(refund_query))
    seen: frozenset[str] = frozenset()
    if disputes and attempts:
        rows = await conn.execute(
            select(provider_disputes.c.dispute_id).where(provider_disputes.c.attempt_id.in_([a.id for a in attempts]))
        )
        seen = frozenset(r.dispute_id for r in rows)
    return Ledger(order_id, attempts, refund_views, seen)


async def load_for_attempt(conn: AsyncConnection, attempt_id: uuid.UUID, *, lock: bool = True) -> Ledger:
    order_id = (
        await conn.execute(select(payment_attempts.c.order_id).where(payment_attempts.c.id == attempt_id))
    ).scalar_one()
    return await load(conn, order_id, lock=lock)


async def load_for_refund(conn: AsyncConnection, refund_id: uuid.UUID, *, lock: bool = True) -> Ledger | None:
    order_id = (await conn.execute(select(refunds.c.order_id).where(refunds.c.id == refund_id))).scalar_one_or_none()
    return None if order_id is None else await load(conn, order_id, lock=lock)


async def apply(
    conn: AsyncConnection,
    ledger: Ledger,
    decision: Decision,
    cause: CloudEvent,
    publisher: EventPublisher,
    *,
    provider_event_id: str | None = None,
) -> None:
    """Write the decision in conn's transaction. The view's rows are locked, so every guarded write
    lands; one that does not raises LedgerConflict before anything is announced."""
    event_id = str(cause.id)
    for refused in decision.refused:
        # the pure ledger checked the table already: counted and logged as the writer counts its refusals
        repo.ATTEMPT_STEPS.refused(
            refused.source,
            refused.target,
            reason=refused.reason,
            attempt_id=str(refused.attempt_id),
            provider_event_id=refused.provider_event_id,
        )
    for move in decision.moves:
        if not await repo.transition(
            conn,
            repo.Stated(move.attempt_id, move.source),
            move.target,
            reason=move.reason,
            event_id=event_id,
            provider_event_id=move.provider_event_id,
            **dict(move.columns),
        ):
            raise LedgerConflict(f"attempt {move.attempt_id} left {move.source} under a locked view")
    for mark in decision.marks:
        # a point written outside the order lock (right after a provider call) may be ahead of the view: a
        # point only moves forward, so the mark then changes nothing, and that is no conflict
        await repo.advance_point(conn, mark.attempt_id, mark.column, mark.point, **dict(mark.carried))
    for refund in decision.new_refunds:
        if refund.provider_refund_id is not None:
            created = await refund_repo.insert_provider_refund(
                conn,
                refund_id=refund.id,
                order_id=refund.order_id,
                attempt_id=_present(refund.attempt_id),
                amount=refund.amount,
                currency=refund.currency,
                reason=refund.reason,
                provider_refund_id=refund.provider_refund_id,
                event_id=event_id,
            )
        else:
            created = await refund_repo.insert_refund(
                conn,
                refund_id=refund.id,
                order_id=refund.order_id,
                attempt_id=refund.attempt_id,
                amount=refund.amount,
                currency=refund.currency,
                reason=refund.reason,
                automatic=refund.automatic,
                requested_by=refund.requested_by,
                state=refund.state,
                event_id=event_id,
                failure_code=refund.failure_code,
                failure_message=refund.failure_message,
            )
        if not created:
            raise LedgerConflict(f"refund {refund.id} exists outside the order's locked view")
    by_id = {r.id: r for r in ledger.refunds}
    for rm in decision.refund_moves:
        columns = {
            k: v
            for k, v in (
                ("failure_code", rm.failure_code),
                ("failure_message", rm.failure_message),
                ("recovery_point", rm.recovery_point),
            )
            if v
        }
        if not await refund_repo.transition(
            conn, repo.Stated(rm.refund_id, rm.source), rm.target, reason=rm.reason, event_id=event_id, **columns
        ):
            raise LedgerConflict(f"refund {rm.refund_id} left {rm.source} under a locked view")
        assert rm.refund_id in by_id
    for dispute_id, attempt_id in decision.new_disputes:
        attempt = next(a for a in ledger.attempts if a.id == attempt_id)
        first = (
            await conn.execute(
                pg_insert(provider_disputes)
                .values(
                    dispute_id=dispute_id,
                    attempt_id=attempt_id,
                    payment_intent_id=attempt.intent_id,
                    provider_event_id=provider_event_id,
                )
                .on_conflict_do_nothing(index_elements=[provider_disputes.c.dispute_id])
                .returning(provider_disputes.c.dispute_id)
            )
        ).first()
        if first is None:
            raise LedgerConflict(f"dispute {dispute_id} recorded outside the order's locked view")
    for data in decision.emits:
        await publisher.emit(conn, data, ledger.order_id, cause)


def _present(value: uuid.UUID | None) -> uuid.UUID:
    assert value is not None
    return value
