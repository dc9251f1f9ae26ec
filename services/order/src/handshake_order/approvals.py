"""Refund approvals (four eyes): support asks for a refund above its limit, finance approves or rejects it. The
row is locked for a decision, so two people deciding at once decide once; an approval issues the refund through
the same path as a finance refund (settle)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order import repository as repo
from handshake_order.access import staff_actor
from handshake_order.commands import locked_order, refused_problem
from handshake_order.db import refund_approvals
from handshake_order.domain import operations as ops
from handshake_order.domain import saga
from handshake_order.domain.operations import ApprovalView
from handshake_order.search import decode_cursor, encode_cursor
from handshake_shared.auth import Principal
from handshake_shared.http import Problem
from handshake_shared.outbox import Outbox

ra = refund_approvals


async def create(
    conn: AsyncConnection,
    *,
    order_id: uuid.UUID,
    amount: int,
    currency: str,
    reason: str,
    restock: bool,
    requested_by: str,
) -> uuid.UUID:
    approval_id = uuid.uuid4()
    await conn.execute(
        insert(ra).values(
            id=approval_id,
            order_id=order_id,
            amount=amount,
            currency=currency,
            reason=reason,
            restock=restock,
            requested_by=requested_by,
        )
    )
    return approval_id


async def lock(conn: AsyncConnection, approval_id: uuid.UUID) -> Row[Any] | None:
    return (await conn.execute(select(ra).where(ra.c.id == approval_id).with_for_update())).first()


def view_of(row: Row[Any]) -> ApprovalView:
    return ApprovalView(state=row.state, requested_by=row.requested_by)


async def decide(
    conn: AsyncConnection,
    approval_id: uuid.UUID,
    *,
    state: str,
    decided_by: str,
    reason: str,
    refund_id: uuid.UUID | None = None,
) -> Row[Any]:
    return (
        await conn.execute(
            update(ra)
            .where(ra.c.id == approval_id, ra.c.state == "pending")
            .values(
                state=state, decided_by=decided_by, decided_at=func.now(), decision_reason=reason, refund_id=refund_id
            )
            .returning(*ra.c)
        )
    ).one()


async def settle(
    conn: AsyncConnection,
    outbox: Outbox,
    approval_id: uuid.UUID,
    principal: Principal,
    *,
    approving: bool,
    reason: str,
) -> dict[str, Any]:
    """Finance approves, issuing the refund exactly as a finance refund would be; or the request is rejected
    (finance) or withdrawn (its requester). Who may do which is ops.may_decide."""
    # the approval row is locked first and then the order: two people deciding at once decide once
    row = await lock(conn, approval_id)
    if row is None:
        raise Problem(404, "Approval not found", type="approval-not-found")
    try:
        ops.may_decide(view_of(row), principal.subject, approving=approving, finance=principal.has_role("finance"))
    except ops.ApprovalRefused as refused:
        raise Problem(refused.status, "Not possible", refused.detail, type=refused.code, state=row.state) from None
    if not approving:
        return body(await decide(conn, approval_id, state="rejected", decided_by=principal.subject, reason=reason))
    order = await locked_order(conn, row.order_id)
    refund_id = uuid.uuid4()
    try:  # exactly the finance refund: the saga's decision, the ledger row, the order.refund_requested
        decision = saga.request_refund(
            repo.view_of(order),
            refund_id=str(refund_id),
            amount=row.amount,
            reason=row.reason,
            restock=row.restock,
            actor=row.requested_by,
        )
    except saga.CommandRefused as refused:
        raise refused_problem(refused, order.state) from None
    # granted under finance's authority, so it does not use up the support limit of the order
    await repo.record_refund(
        conn,
        refund_id=refund_id,
        order_id=row.order_id,
        amount=row.amount,
        currency=order.currency,
        reason=row.reason,
        restock=row.restock,
        requested_by=row.requested_by,
        requested_role="finance",
        approved_by=principal.subject,
    )
    await repo.apply(conn, outbox, decision, actor=staff_actor(principal.subject))
    decided = await decide(
        conn, approval_id, state="approved", decided_by=principal.subject, reason=reason, refund_id=refund_id
    )
    return {**body(decided), "refund_state": "requested"}


def body(row: Row[Any]) -> dict[str, Any]:
    return {
        "approval_id": str(row.id),
        "order_id": str(row.order_id),
        "amount": row.amount,
        "currency": row.currency,
        "reason": row.reason,
        "restock": row.restock,
        "state": row.state,
        "requested_by": row.requested_by,
        "requested_at": row.requested_at.isoformat(),
        "decided_by": row.decided_by,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "decision_reason": row.decision_reason,
        "refund_id": str(row.refund_id) if row.refund_id else None,
    }


async def of_order(conn: AsyncConnection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = (await conn.execute(select(ra).where(ra.c.order_id == order_id).order_by(ra.c.requested_at, ra.c.id))).all()
    return [body(r) for r in rows]


async def listing(
    conn: AsyncConnection, *, state: str | None, order_id: uuid.UUID | None, before: str | None, limit: int
) -> dict[str, Any]:
    """Newest first, keyset-paged like the order search (`next` is the cursor of the following page)."""
    where = []
    if state is not None:
        where.append(ra.c.state == state)
    if order_id is not None:
        where.append(ra.c.order_id == order_id)
    if before is not None:
        at, approval_id = decode_cursor(before)
        where.append(or_(ra.c.requested_at < at, and_(ra.c.requested_at == at, ra.c.id < approval_id)))
    rows = (
        await conn.execute(select(ra).where(*where).order_by(ra.c.requested_at.desc(), ra.c.id.desc()).limit(limit + 1))
    ).all()
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "approvals": [body(r) for r in page],
        "next": encode_cursor(page[-1].requested_at, page[-1].id) if more else None,
    }
