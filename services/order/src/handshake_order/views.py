"""What an order looks like over HTTP: to its customer (owner or lookup token, access.may_read), waiting for a
change (long-poll), and to staff (with notes, refunds, approvals and the staff audit)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from handshake_order import approvals
from handshake_order import repository as repo
from handshake_order.access import may_read
from handshake_order.changes import OrderChanges
from handshake_order.commands import order_id_or_404, order_not_found
from handshake_order.domain import operations as ops
from handshake_order.settings import OrderSettings
from handshake_shared.auth import principal_from_header
from handshake_shared.db import Database


def order_body(order: Any, events: list[dict[str, Any]] | None) -> dict[str, Any]:
    body = {
        "order_id": str(order.id),
        "reference": ops.reference_of(order.id),
        "state": order.state,
        "version": order.version,
        "total": order.total,
        "currency": order.currency,
        "snapshot": order.snapshot,
        "payment_intent_id": order.payment_intent_id,
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
    }
    if events is not None:
        body["timeline"] = events
    return body


async def readable_order(
    db: Database,
    settings: OrderSettings,
    order_id: str,
    authorization: str | None,
    token: str | None,
    *,
    with_timeline: bool = True,
) -> tuple[Any, list[dict[str, Any]] | None]:
    """The order and its timeline for its owner or lookup-token holder; anyone else gets the same 404 as for a
    missing order."""
    try:
        oid = uuid.UUID(order_id)
    except ValueError:
        raise order_not_found() from None
    principal = principal_from_header(settings, authorization)
    async with db.read() as conn:
        order = await repo.get_order(conn, oid)
        if not may_read(order, principal, token):
            raise order_not_found()
        events = await repo.timeline(conn, oid) if with_timeline else None
    return order, events


async def awaited_order(
    db: Database,
    settings: OrderSettings,
    changes: OrderChanges,
    order_id: str,
    authorization: str | None,
    token: str | None,
    *,
    until: Callable[[Any], bool],
    timeout: float,
) -> Any:
    """The order once `until(order)` holds, or as it is when the timeout passes. The waiter is registered
    before the order is read, so a commit landing between that read and the wait still wakes it; each wake
    re-reads the row, the notification being only a hint."""
    oid = order_id_or_404(order_id)
    with changes.watch(oid) as changed:
        order, _ = await readable_order(db, settings, order_id, authorization, token, with_timeline=False)
        if changed is None:  # as many requests waiting as the process takes: answer now, the client asks again
            return order
        deadline = asyncio.get_running_loop().time() + timeout
        while not until(order) and not changes.stopping:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                break
            changed.clear()
            async with db.read() as conn:
                order = await repo.get_order(conn, oid)
    return order


async def with_timeline(db: Database, order_id: uuid.UUID) -> tuple[Any, list[dict[str, Any]]]:
    async with db.read() as conn:
        order = await repo.get_order(conn, order_id)
        return order, await repo.timeline(conn, order_id)


async def staff_view(db: Database, order_id: str) -> dict[str, Any]:
    oid = repo.parse_order_id(order_id)
    async with db.read() as conn:
        row = await repo.get_order(conn, oid) if oid is not None else None
        if oid is None or row is None:
            raise order_not_found()
        body = order_body(row, await repo.timeline(conn, oid))
        body["notes"] = await repo.notes(conn, oid)
        body["refunds"] = await repo.refunds_of(conn, oid)
        body["refund_approvals"] = await approvals.of_order(conn, oid)
        body["audit"] = await repo.staff_audit(conn, oid)
    body.update(
        customer_id=row.customer_id,
        email=row.contact_email,
        captured_amount=row.captured_amount,
        refunded_amount=row.refunded_amount,
        refund_pending_amount=row.refund_pending_amount,
        stock_committed=row.stock_committed,
    )
    return body
