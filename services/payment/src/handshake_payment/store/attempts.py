"""Attempt queries and the one place an attempt transition is applied (state + audit row together)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.db import attempt_transitions, payment_attempts
from handshake_payment.domain.attempts import ATTEMPT_LIFECYCLE, HOLDS_PAYMENT, AttemptState
from handshake_payment.domain.recovery import AttemptPoint, before
from handshake_payment.store import leases
from handshake_shared.locks import AdvisoryLock, lock_for_transaction
from handshake_shared.transitions import AuditedLifecycle


class AttemptRow(Protocol):
    """A payment_attempts row as the store returns it (db.py says what each column is for)."""

    id: uuid.UUID
    order_id: uuid.UUID
    request_id: str
    amount: int
    currency: str
    state: str
    provider_intent_id: str | None
    locked_at: datetime | None
    failure_code: str | None
    failure_message: str | None
    amount_captured: int | None
    intent_create_calls: int
    provider_mismatch: dict[str, Any] | None
    duplicate_of: uuid.UUID | None
    recovery_point: str
    capture_point: str | None
    capture_amount: int | None
    cancel_point: str | None
    cancel_code: str | None
    cancel_reason: str | None
    give_back_point: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Stated:
    """What the guarded transition writers read of a row: its id and the state its reader saw."""

    id: uuid.UUID
    state: str


async def lock_order(conn: AsyncConnection, order_id: uuid.UUID) -> None:
    """Serialise decisions that span an order's attempts (which attempt holds the payment, how much is left
    to refund) until the transaction ends. Taken before any attempt row lock, so it cannot deadlock with
    another order-level decision."""
    await lock_for_transaction(conn, AdvisoryLock.PAYMENT_ORDER, str(order_id))


async def insert_attempt(
    conn: AsyncConnection, *, order_id: uuid.UUID, request_id: str, amount: int, currency: str, event_id: str
) -> bool:
    """Create the attempt for a payment request unless it exists; True when this call created it."""
    attempt_id = uuid.uuid4()
    created = (
        await conn.execute(
            pg_insert(payment_attempts)
            .values(
                id=attempt_id,
                order_id=order_id,
                request_id=request_id,
                amount=amount,
                currency=currency,
                state=AttemptState.CREATING,
                recovery_point=AttemptPoint.RECORDED,
            )
            .on_conflict_do_nothing(index_elements=[payment_attempts.c.request_id])
            .returning(payment_attempts.c.id)
        )
    ).first()
    if created is None:
        return False
    await ATTEMPT_STEPS.record(
        conn, attempt_id, None, AttemptState.CREATING, reason="payment requested", audit={"event_id": event_id}
    )
    metrics.ATTEMPTS.labels("created").inc()
    return True


async def by_request(conn: AsyncConnection, request_id: str) -> AttemptRow | None:
    query = select(payment_attempts).where(payment_attempts.c.request_id == request_id)
    return cast("AttemptRow | None", (await conn.execute(query)).first())


# statements every payment runs, built once (handshake_shared.db.built_once says why)
_ATTEMPT = select(payment_attempts).where(payment_attempts.c.id == bindparam("attempt_id"))
_LOCKED_ATTEMPT = _ATTEMPT.with_for_update()
# the attempt lifecycle's one writer: the table checked, the state compared-and-set, the audit row; refusals
# counted here, the outcomes by transition() (labelled by where the attempt went, not by the step)
ATTEMPT_STEPS = AuditedLifecycle(
    ATTEMPT_LIFECYCLE,
    rows=payment_attempts,
    audit=attempt_transitions,
    subject="attempt_id",
    refused=metrics.TRANSITIONS_REFUSED,
)


async def get(conn: AsyncConnection, attempt_id: uuid.UUID, *, lock: bool = False) -> AttemptRow | None:
    row = (await conn.execute(_LOCKED_ATTEMPT if lock else _ATTEMPT, {"attempt_id": attempt_id})).first()
    return cast("AttemptRow | None", row)


async def by_intent(conn: AsyncConnection, intent_id: str) -> AttemptRow | None:
    query = select(payment_attempts).where(payment_attempts.c.provider_intent_id == intent_id)
    return cast("AttemptRow | None", (await conn.execute(query)).first())


async def order_attempts(conn: AsyncConnection, order_id: uuid.UUID) -> list[AttemptRow]:
    query = select(payment_attempts).where(payment_attempts.c.order_id == order_id)
    rows = (await conn.execute(query.order_by(payment_attempts.c.created_at, payment_attempts.c.id))).all()
    return cast("list[AttemptRow]", list(rows))


async def payment_holder(
    conn: AsyncConnection, order_id: uuid.UUID, *, other_than: uuid.UUID | None = None
) -> AttemptRow | None:
    """The attempt that holds the order's money (authorized or captured, not a duplicate), if any."""
    query = select(payment_attempts).where(
        payment_attempts.c.order_id == order_id,
        payment_attempts.c.state.in_([s.value for s in HOLDS_PAYMENT]),
        payment_attempts.c.duplicate_of.is_(None),
    )
    if other_than is not None:
        query = query.where(payment_attempts.c.id != other_than)
    return cast("AttemptRow | None", (await conn.execute(query)).first())


async def lease_intent_creation(conn: AsyncConnection, attempt_id: uuid.UUID, lease_seconds: float) -> bool:
    """Take the attempt's intent-creation lease: False while another handler holds an unexpired one, once
    the intent is stored, or once the attempt left `creating` (an order cancelled before its intent existed
    never gets one). Each take counts a provider call (intent_create_calls)."""
    return await leases.take(
        conn,
        payment_attempts,
        attempt_id,
        lease_seconds,
        payment_attempts.c.provider_intent_id.is_(None),
        payment_attempts.c.state == AttemptState.CREATING,
        intent_create_calls=payment_attempts.c.intent_create_calls + 1,
    )


async def release_lease(conn: AsyncConnection, attempt_id: uuid.UUID) -> None:
    await leases.release(conn, payment_attempts, attempt_id)


async def store_intent(conn: AsyncConnection, attempt_id: uuid.UUID, intent_id: str) -> bool:
    """Recovery point 2: from here on no handler calls the provider to create an intent for this attempt."""
    stored = (
        await conn.execute(
            update(payment_attempts)
            .where(payment_attempts.c.id == attempt_id, payment_attempts.c.provider_intent_id.is_(None))
            .values(
                provider_intent_id=intent_id,
                recovery_point=AttemptPoint.INTENT_STORED,
                locked_at=None,
                updated_at=func.now(),
            )
            .returning(payment_attempts.c.id)
        )
    ).first()
    return stored is not None


async def adopt_intent(conn: AsyncConnection, attempt_id: uuid.UUID, intent_id: str) -> None:
    """The intent named by its metadata becomes the attempt's (the creator died before storing it): the same
    recovery point as storing it."""
    await conn.execute(
        update(payment_attempts)
        .where(payment_attempts.c.id == attempt_id, payment_attempts.c.provider_intent_id.is_(None))
        .values(provider_intent_id=intent_id, recovery_point=AttemptPoint.INTENT_STORED, updated_at=func.now())
    )


async def finish_recovery(conn: AsyncConnection, attempt_id: uuid.UUID) -> None:
    """Nothing of the attempt is left open at the provider (an intent made for an attempt the order had
    cancelled is cancelled there too)."""
    await conn.execute(
        update(payment_attempts)
        .where(payment_attempts.c.id == attempt_id, payment_attempts.c.recovery_point != AttemptPoint.FINISHED)
        .values(recovery_point=AttemptPoint.FINISHED, updated_at=func.now())
    )


async def advance_point(conn: AsyncConnection, attempt_id: uuid.UUID, column: str, point: str, **carried: Any) -> bool:
    """An operation's recovery point (capture_point, cancel_point, give_back_point) reached, with what it
    carries, in the caller's transaction: the one that commits the phase's result. Only forward, so a late
    or concurrent writer of an earlier point changes nothing; False when the row was there already."""
    target = payment_attempts.c[column]
    moved = (
        await conn.execute(
            update(payment_attempts)
            .where(
                payment_attempts.c.id == attempt_id,
                or_(target.is_(None), target.in_(before(column, point))),
            )
            .values({column: point, **carried, "updated_at": func.now()})
            .returning(payment_attempts.c.id)
        )
    ).first()
    return moved is not None


async def session_attempt(conn: AsyncConnection, order_id: uuid.UUID) -> AttemptRow | None:
    """The order's latest attempt whose intent was announced: a secret is never handed out for an attempt
    still in `creating`, so a provider fact can never overtake payment.intent_created, nor for one the order
    cancelled before its intent was announced (the intent a creator stored just after the cancel is being
    cancelled at the provider; nobody may pay it meanwhile)."""
    announced = (
        select(attempt_transitions.c.id)
        .where(
            attempt_transitions.c.attempt_id == payment_attempts.c.id,
            attempt_transitions.c.to_state == AttemptState.REQUIRES_PAYMENT,
        )
        .exists()
    )
    row = (
        await conn.execute(
            select(payment_attempts)
            .where(
                and_(
                    payment_attempts.c.order_id == order_id,
                    payment_attempts.c.provider_intent_id.is_not(None),
                    payment_attempts.c.state != AttemptState.CREATING,
                    or_(payment_attempts.c.state != AttemptState.CANCELED, announced),
                )
            )
            .order_by(payment_attempts.c.created_at.desc(), payment_attempts.c.id)
            .limit(1)
        )
    ).first()
    return cast("AttemptRow | None", row)


def attempt_summary(a: AttemptRow) -> dict[str, Any]:
    return {
        "order_id": str(a.order_id),
        "attempt_id": str(a.id),
        "state": a.state,
        "amount": a.amount,
        "currency": a.currency,
        "payment_intent_id": a.provider_intent_id,
        "amount_captured": a.amount_captured,
        "failure_code": a.failure_code,
        "duplicate_of": str(a.duplicate_of) if a.duplicate_of else None,
        "created_at": a.created_at.isoformat(),
        "updated_at": a.updated_at.isoformat(),
    }


async def attempts_of_order(conn: AsyncConnection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    query = select(payment_attempts).where(payment_attempts.c.order_id == order_id)
    attempts = (await conn.execute(query.order_by(payment_attempts.c.created_at))).all()
    audit = (
        await conn.execute(
            select(attempt_transitions)
            .where(attempt_transitions.c.attempt_id.in_([a.id for a in attempts]))
            .order_by(attempt_transitions.c.id)
        )
    ).all()
    return [
        {
            "attempt_id": str(a.id),
            "request_id": a.request_id,
            "state": a.state,
            "amount": a.amount,
            "currency": a.currency,
            "payment_intent_id": a.provider_intent_id,
            "failure_code": a.failure_code,
            "failure_message": a.failure_message,
            "amount_captured": a.amount_captured,
            "duplicate_of": str(a.duplicate_of) if a.duplicate_of else None,
            "created_at": a.created_at.isoformat(),
            "updated_at": a.updated_at.isoformat(),
            "transitions": [
                {
                    "from": t.from_state,
                    "to": t.to_state,
                    "reason": t.reason,
                    "event_id": t.event_id,
                    "provider_event_id": t.provider_event_id,
                    "at": t.at.isoformat(),
                }
                for t in audit
                if t.attempt_id == a.id
            ],
        }
        for a in attempts
    ]


async def transition(
    conn: AsyncConnection,
    attempt: AttemptRow | Stated,
    target: AttemptState,
    *,
    reason: str,
    event_id: str | None = None,
    provider_event_id: str | None = None,
    **columns: Any,
) -> bool:
    """Apply target if the table allows it from the attempt's current state; refuse and log otherwise.
    The caller holds the attempt's row lock (or the update's state guard makes a lost race a no-op).
    `columns` are set with the state: plain values or SQL expressions."""
    moved = await ATTEMPT_STEPS.move(
        conn,
        attempt.id,
        AttemptState(attempt.state),
        target,
        reason=reason,
        columns=columns,
        audit={"event_id": event_id, "provider_event_id": provider_event_id},
        log_fields={"attempt_id": str(attempt.id), "provider_event_id": provider_event_id},
    )
    if moved:
        metrics.ATTEMPTS.labels(target.value if target != AttemptState.REQUIRES_PAYMENT else "intent_created").inc()
    return moved
