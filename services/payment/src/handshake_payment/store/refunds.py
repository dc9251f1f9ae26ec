"""Refund queries and the one place a refund's state changes (state + audit row together)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment.db import refund_transitions, refunds
from handshake_payment.domain.recovery import GiveBackPoint, RefundPoint
from handshake_payment.domain.refunds import REFUND_LIFECYCLE, RefundState
from handshake_payment.store import leases
from handshake_payment.store.attempts import Stated, advance_point
from handshake_shared.transitions import AuditedLifecycle

# the refund lifecycle's one writer: the table checked, the state compared-and-set, the audit row
REFUND_STEPS = AuditedLifecycle(REFUND_LIFECYCLE, rows=refunds, audit=refund_transitions, subject="refund_id")


async def insert_refund(
    conn: AsyncConnection,
    *,
    refund_id: uuid.UUID,
    order_id: uuid.UUID,
    attempt_id: uuid.UUID | None,
    amount: int,
    currency: str,
    reason: str,
    automatic: bool,
    requested_by: str | None,
    state: RefundState,
    event_id: str | None,
    failure_code: str | None = None,
    failure_message: str | None = None,
) -> bool:
    """Record a refund unless its id exists; True when this call created it (with its first audit row)."""
    created = (
        await conn.execute(
            pg_insert(refunds)
            .values(
                id=refund_id,
                order_id=order_id,
                attempt_id=attempt_id,
                amount=amount,
                currency=currency,
                reason=reason,
                automatic=automatic,
                requested_by=requested_by,
                state=state,
                failure_code=failure_code,
                failure_message=failure_message,
                recovery_point=RefundPoint.RECORDED if state == RefundState.REQUESTED else RefundPoint.FINISHED,
            )
            .on_conflict_do_nothing(index_elements=[refunds.c.id])
            .returning(refunds.c.id)
        )
    ).first()
    if created is None:
        return False
    reason = "refund requested" if state == RefundState.REQUESTED else f"refused: {failure_code}"
    await REFUND_STEPS.record(conn, refund_id, None, state, reason=reason, audit={"event_id": event_id})
    return True


class RefundRow(Protocol):
    """A refunds row as the store returns it (db.py says what each column is for)."""

    id: uuid.UUID
    order_id: uuid.UUID
    attempt_id: uuid.UUID | None
    amount: int
    currency: str
    reason: str
    automatic: bool
    requested_by: str | None
    state: str
    provider_refund_id: str | None
    locked_at: datetime | None
    failure_code: str | None
    failure_message: str | None
    recovery_point: str
    created_at: datetime
    updated_at: datetime


async def get(conn: AsyncConnection, refund_id: uuid.UUID, *, lock: bool = False) -> RefundRow | None:
    query = select(refunds).where(refunds.c.id == refund_id)
    return cast("RefundRow | None", (await conn.execute(query.with_for_update() if lock else query)).first())


async def committed_amount(conn: AsyncConnection, attempt_id: uuid.UUID) -> int:
    """What is refunded or may be being refunded from a capture: every refund that has not failed (nor
    failed after the provider had accepted it)."""
    total = await conn.execute(
        select(func.coalesce(func.sum(refunds.c.amount), 0)).where(
            refunds.c.attempt_id == attempt_id, refunds.c.state.not_in([RefundState.FAILED, RefundState.REVERSED])
        )
    )
    return int(total.scalar_one())


async def lease_provider_call(conn: AsyncConnection, refund_id: uuid.UUID, lease_seconds: float) -> bool:
    """Take the refund's provider-call lease: False while another handler holds an unexpired one, or once
    the refund is no longer waiting for the provider."""
    return await leases.take(
        conn,
        refunds,
        refund_id,
        lease_seconds,
        refunds.c.state == RefundState.REQUESTED,
        refunds.c.provider_refund_id.is_(None),
    )


async def release_lease(conn: AsyncConnection, refund_id: uuid.UUID) -> None:
    await leases.release(conn, refunds, refund_id)


async def store_provider_refund(conn: AsyncConnection, refund_id: uuid.UUID, provider_refund_id: str) -> bool:
    """Recovery point 2: the provider refunded; from here on nobody asks it again for this refund. A
    duplicate's automatic refund is its give-back's provider call too: that point is reached with it."""
    stored = (
        await conn.execute(
            update(refunds)
            .where(refunds.c.id == refund_id, refunds.c.provider_refund_id.is_(None))
            .values(
                provider_refund_id=provider_refund_id,
                recovery_point=RefundPoint.PROVIDER_REFUNDED,
                locked_at=None,
                updated_at=func.now(),
            )
            .returning(refunds.c.automatic, refunds.c.attempt_id)
        )
    ).first()
    if stored is not None and stored.automatic and stored.attempt_id is not None:
        await advance_point(conn, stored.attempt_id, "give_back_point", GiveBackPoint.GIVEN_BACK)
    return stored is not None


async def transition(
    conn: AsyncConnection,
    refund: RefundRow | Stated,
    target: RefundState,
    *,
    reason: str,
    event_id: str | None,
    **columns: Any,
) -> bool:
    """Apply target if the table allows it from the refund's current state; the provider-call lease ends
    with the move."""
    return await REFUND_STEPS.move(
        conn,
        refund.id,
        RefundState(refund.state),
        target,
        reason=reason,
        columns={"locked_at": None, **columns},
        audit={"event_id": event_id},
        log_fields={"refund_id": str(refund.id)},
    )


async def refunds_of_order(conn: AsyncConnection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.execute(select(refunds).where(refunds.c.order_id == order_id).order_by(refunds.c.created_at))
    return [
        {
            "refund_id": str(r.id),
            "attempt_id": str(r.attempt_id) if r.attempt_id else None,
            "amount": r.amount,
            "currency": r.currency,
            "reason": r.reason,
            "automatic": r.automatic,
            "requested_by": r.requested_by,
            "state": r.state,
            "provider_refund_id": r.provider_refund_id,
            "failure_code": r.failure_code,
            "failure_message": r.failure_message,
            "created_at": r.created_at.isoformat(),
            "updated_at": r.updated_at.isoformat(),
        }
        for r in rows
    ]


async def by_provider_refund(conn: AsyncConnection, provider_refund_id: str) -> RefundRow | None:
    query = select(refunds).where(refunds.c.provider_refund_id == provider_refund_id)
    return cast("RefundRow | None", (await conn.execute(query)).first())


async def insert_provider_refund(
    conn: AsyncConnection,
    *,
    refund_id: uuid.UUID,
    order_id: uuid.UUID,
    attempt_id: uuid.UUID,
    amount: int,
    currency: str,
    reason: str,
    provider_refund_id: str,
    event_id: str | None,
) -> bool:
    """Record a refund made at the provider outside Handshake, already succeeded, unless its provider refund
    id (or its id, derived from it) is known; True when this call created it (with its audit row)."""
    created = (
        await conn.execute(
            pg_insert(refunds)
            .values(
                id=refund_id,
                order_id=order_id,
                attempt_id=attempt_id,
                amount=amount,
                currency=currency,
                reason=reason,
                automatic=False,
                requested_by="provider",
                state=RefundState.SUCCEEDED,
                provider_refund_id=provider_refund_id,
                recovery_point=RefundPoint.FINISHED,
            )
            .on_conflict_do_nothing()
            .returning(refunds.c.id)
        )
    ).first()
    if created is None:
        return False
    await REFUND_STEPS.record(
        conn,
        refund_id,
        None,
        RefundState.SUCCEEDED,
        reason=f"refunded at the provider: {provider_refund_id}",
        audit={"event_id": event_id},
    )
    return True
