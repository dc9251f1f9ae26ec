"""Order queries, and the one place a saga Decision is applied: transitions with their audit rows,
column updates, notes and outbox events, all in the caller's transaction.

Every applied transition is one audit row and one order.* event on order.events.v1, written here together:
the order's creation (record_creation) and every Decision (apply). Nothing else writes an order's state."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import Text, bindparam, cast, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order.changes import CHANNEL
from handshake_order.db import order_notes, order_transitions, orders, refund_approvals, refunds
from handshake_order.domain.operations import withdrawn
from handshake_order.domain.saga import Decision, OrderView
from handshake_order.domain.states import ORDER_LIFECYCLE, OrderState
from handshake_order.metrics import REFUSED, TRANSITIONS
from handshake_shared.db import built_once
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import order as o
from handshake_shared.outbox import Outbox
from handshake_shared.transitions import AuditedLifecycle

log = structlog.get_logger("order")


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def parse_order_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        return None


# the statements every checkout runs several times, built once (handshake_shared.db.built_once says why)
_ORDER = select(orders).where(orders.c.id == bindparam("order_id"))
_LOCKED_ORDER = _ORDER.with_for_update()
_NOTE = insert(order_notes)
# The lifecycle's audit trail and counts. The state itself is written by apply's one update of the row (with
# its version and the change notification), under the order's row lock, after the saga checked the table.
ORDER_STEPS = AuditedLifecycle(
    ORDER_LIFECYCLE, rows=orders, audit=order_transitions, subject="order_id", applied=TRANSITIONS, refused=REFUSED
)


async def lock_order(conn: AsyncConnection, order_id: str | uuid.UUID) -> Row[Any] | None:
    return (await conn.execute(_LOCKED_ORDER, {"order_id": _uuid(order_id)})).first()


async def get_order(conn: AsyncConnection, order_id: str | uuid.UUID) -> Row[Any] | None:
    return (await conn.execute(_ORDER, {"order_id": _uuid(order_id)})).first()


def view_of(row: Row[Any]) -> OrderView:
    return OrderView(
        id=str(row.id),
        state=OrderState(row.state),
        total=row.total,
        currency=row.currency,
        payment_attempt_id=row.payment_attempt_id,
        payment_intent_id=row.payment_intent_id,
        payment_requested=row.payment_requested,
        payment_attempts=row.payment_attempts,
        captured_amount=row.captured_amount,
        stock_committed=row.stock_committed,
        refunded_amount=row.refunded_amount,
        refund_pending_amount=row.refund_pending_amount,
        short_hold=row.hold_seconds is not None,
        payment_session_opened=row.payment_session_opened,
    )


async def record_creation(
    conn: AsyncConnection, outbox: Outbox, placed: o.OrderPlaced, *, actor: str, traceparent: str | None
) -> None:
    """The order's first transition (into draft): its audit row and order.placed, which announces it."""
    reason = "checkout"
    await ORDER_STEPS.record(
        conn, _uuid(placed.order_id), None, OrderState.DRAFT, reason=reason, audit={"actor": actor}
    )
    placed = placed.model_copy(update={"transition": o.Transition(from_state=None, to_state="draft", reason=reason)})
    await outbox.emit(conn, placed, order_id=placed.order_id, traceparent=traceparent)


async def apply(
    conn: AsyncConnection, outbox: Outbox, decision: Decision, *, actor: str, cause: CloudEvent | None = None
) -> None:
    order_id = _uuid(decision.view.id)
    event_id = str(cause.id) if cause else None
    announced = [
        (e.transition.from_state, e.transition.to_state, e.transition.reason)
        for e in decision.emits
        if e.transition is not None
    ]
    if announced != [(str(current), str(target), reason) for current, target, reason in decision.transitions]:
        # Decision.move makes both together; anything else would put a state change on the topic that
        # the order never made, or make one the topic never hears of
        raise RuntimeError(f"order {order_id}: transitions {decision.transitions} announced as {announced}")
    for current, target, reason in decision.refused:
        ORDER_STEPS.refused(current, target, reason=reason, order_id=str(order_id))
    columns = dict(decision.updates)
    if decision.transitions:
        columns["state"] = decision.view.state
    if columns:
        await conn.execute(
            changed_statement(tuple(sorted(columns))),
            {"order_id": order_id, **{f"new_{name}": value for name, value in columns.items()}},
        )
    for current, target, reason in decision.transitions:
        await ORDER_STEPS.record(
            conn,
            order_id,
            current,
            target,
            reason=reason,
            audit={"actor": actor, "event_id": event_id},
            log_fields={"order_id": str(order_id)},
        )
    for kind, detail in decision.notes:
        await conn.execute(
            _NOTE, {"order_id": order_id, "kind": kind, "detail": detail, "actor": actor, "event_id": event_id}
        )
    for data in decision.emits:
        await outbox.emit(conn, data, order_id=order_id, cause=cause)


@built_once
def changed_statement(columns: tuple[str, ...]) -> Any:
    """The row's update, its version raised, and the notification of it in one statement; one statement per
    set of columns, with the order id (`order_id`) and the new values (`new_<column>`: SQLAlchemy reserves a
    column's own name for the values it binds itself) as parameters. NOTIFY is transactional:
    PostgreSQL delivers it when this transaction commits and drops it if it rolls back, so a waiting reader
    (changes.py) never hears of a change it could not yet read."""
    row = (
        update(orders)
        .where(orders.c.id == bindparam("order_id"))
        .values(
            updated_at=func.now(), version=orders.c.version + 1, **{name: bindparam(f"new_{name}") for name in columns}
        )
        .returning(orders.c.id, orders.c.version)
        .cte("changed")
    )
    return select(func.pg_notify(CHANNEL, cast(row.c.id, Text) + ":" + cast(row.c.version, Text))).select_from(row)


async def timeline(conn: AsyncConnection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(
            select(order_transitions).where(order_transitions.c.order_id == order_id).order_by(order_transitions.c.id)
        )
    ).all()
    return [
        {
            "from": r.from_state,
            "to": r.to_state,
            "reason": r.reason,
            "actor": r.actor,
            "event_id": r.event_id,
            "at": r.at.isoformat(),
        }
        for r in rows
    ]


async def notes(conn: AsyncConnection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(select(order_notes).where(order_notes.c.order_id == order_id).order_by(order_notes.c.id))
    ).all()
    return [
        {"kind": r.kind, "detail": r.detail, "actor": r.actor, "event_id": r.event_id, "at": r.at.isoformat()}
        for r in rows
    ]


async def refunds_of(conn: AsyncConnection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(select(refunds).where(refunds.c.order_id == order_id).order_by(refunds.c.created_at))
    ).all()
    return [
        {
            "refund_id": str(r.id),
            "amount": r.amount,
            "currency": r.currency,
            "reason": r.reason,
            "restock": r.restock,
            "requested_by": r.requested_by,
            "approved_by": r.approved_by,
            "state": r.state,
            "provider_refund_id": r.provider_refund_id,
            "created_at": r.created_at.isoformat(),
            "updated_at": r.updated_at.isoformat(),
        }
        for r in rows
    ]


async def record_refund(
    conn: AsyncConnection,
    *,
    refund_id: uuid.UUID,
    order_id: uuid.UUID,
    amount: int,
    currency: str,
    reason: str,
    restock: bool,
    requested_by: str,
    requested_role: str | None,
    approved_by: str | None = None,
) -> None:
    """The refund ledger's row, written with the saga's order.refund_requested; `requested_role` is the staff
    role it was granted under, None for a refund the order asked for on its own."""
    await conn.execute(
        insert(refunds).values(
            id=refund_id,
            order_id=order_id,
            amount=amount,
            currency=currency,
            reason=reason,
            restock=restock,
            requested_by=requested_by,
            requested_role=requested_role,
            approved_by=approved_by,
            state="requested",
        )
    )


async def support_refunded(conn: AsyncConnection, order_id: uuid.UUID) -> int:
    """What support has refunded or has pending on the order under its own limit; refunds that failed or were
    reversed gave nothing and do not count. Under the order's row lock, concurrent requests count each other."""
    return int(
        (
            await conn.execute(
                select(func.coalesce(func.sum(refunds.c.amount), 0)).where(
                    refunds.c.order_id == order_id,
                    refunds.c.requested_role == "support",
                    refunds.c.state.in_(("requested", "succeeded")),
                )
            )
        ).scalar_one()
    )


def _staff(actor: str) -> bool:
    return actor.startswith("staff:")


async def staff_audit(conn: AsyncConnection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every staff action on the order, oldest first: transitions and notes written under a staff name, and
    each refund approval asked for and decided."""
    rows: list[dict[str, Any]] = []
    for t in await timeline(conn, order_id):
        if _staff(t["actor"]):
            rows.append(
                {
                    "at": t["at"],
                    "actor": t["actor"],
                    "action": "transition",
                    "detail": f"{t['from']} -> {t['to']}: {t['reason']}",
                }
            )
    for n in await notes(conn, order_id):
        if _staff(n["actor"]):
            rows.append({"at": n["at"], "actor": n["actor"], "action": n["kind"], "detail": n["detail"]})
    ra = refund_approvals
    for a in (await conn.execute(select(ra).where(ra.c.order_id == order_id))).all():
        rows.append(
            {
                "at": a.requested_at.isoformat(),
                "actor": f"staff:{a.requested_by}",
                "action": "refund-approval-requested",
                "detail": f"{a.amount} {a.currency}: {a.reason}",
            }
        )
        if a.decided_at is not None:
            decision = "withdrawn" if withdrawn(a.state, a.requested_by, a.decided_by) else a.state
            rows.append(
                {
                    "at": a.decided_at.isoformat(),
                    "actor": f"staff:{a.decided_by}",
                    "action": f"refund-approval-{decision}",
                    "detail": a.decision_reason or "",
                }
            )
    return sorted(rows, key=lambda r: r["at"])
