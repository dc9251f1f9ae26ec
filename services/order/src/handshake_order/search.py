"""Staff search over orders: any combination of filters, newest first, keyset paging on (created_at, id) so a
page costs the same however deep it is and concurrent inserts never make a page repeat or skip an order."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order.db import orders
from handshake_order.domain.operations import IN_PROGRESS, reference_of, reference_range


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class OrderSearch:
    order_id: uuid.UUID | None = None
    reference: str | None = None
    customer_id: str | None = None
    email: str | None = None  # already normalised
    payment_intent_id: str | None = None
    states: Sequence[str] = field(default_factory=tuple)
    stuck_older_than_minutes: int | None = None
    before: str | None = None
    limit: int = 50


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(order_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position after which the next page starts; BadCursor for anything this service did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, order_id = json.loads(raw)
        at = datetime.fromisoformat(created_at)
        if at.tzinfo is None:
            raise ValueError("cursor time without a zone")
        # in UTC here: the driver would convert it anyway, and a time at the calendar's edge cannot be
        return at.astimezone(UTC), uuid.UUID(order_id)
    except (ValueError, TypeError, OverflowError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadCursor(str(exc)) from None


def item(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "reference": reference_of(row.id),
        "state": row.state,
        "total": row.total,
        "currency": row.currency,
        "customer_id": row.customer_id,
        "email": row.contact_email,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "captured_amount": row.captured_amount,
        "refunded_amount": row.refunded_amount,
        "payment_intent_id": row.payment_intent_id,
    }


async def search(conn: AsyncConnection, q: OrderSearch) -> dict[str, Any]:
    where = []
    if q.order_id is not None:
        where.append(orders.c.id == q.order_id)
    if q.reference is not None:
        bounds = reference_range(q.reference)
        if bounds is None:
            return {"orders": [], "next": None}
        where.append(orders.c.id.between(*bounds))
    if q.customer_id is not None:
        where.append(orders.c.customer_id == q.customer_id)
    if q.email is not None:
        where.append(orders.c.contact_email == q.email)
    if q.payment_intent_id is not None:
        where.append(orders.c.payment_intent_id == q.payment_intent_id)
    if q.states:
        where.append(orders.c.state.in_(list(q.states)))
    if q.stuck_older_than_minutes is not None:
        where.append(orders.c.state.in_(sorted(IN_PROGRESS)))
        where.append(orders.c.updated_at < func.now() - text(f"interval '{int(q.stuck_older_than_minutes)} minutes'"))
    if q.before is not None:
        created_at, order_id = decode_cursor(q.before)
        where.append(
            or_(orders.c.created_at < created_at, and_(orders.c.created_at == created_at, orders.c.id < order_id))
        )
    stmt = select(orders).where(*where).order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(q.limit + 1)
    rows = (await conn.execute(stmt)).all()
    page = rows[: q.limit]
    more = len(rows) > q.limit
    return {
        "orders": [item(r) for r in page],
        "next": encode_cursor(page[-1].created_at, page[-1].id) if more else None,
    }
