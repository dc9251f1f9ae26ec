"""Order queries and the one place a lifecycle transition is applied (state + audit row together)."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order.db import order_transitions, orders
from handshake_order.domain.states import ORDER_LIFECYCLE, OrderState

log = structlog.get_logger("order")

TRANSITIONS = Counter("handshake_order_transitions_total", "Applied order transitions", ["from_state", "to_state"])
REFUSED = Counter("handshake_order_transitions_refused_total", "Transitions refused by the lifecycle table", ["from_state", "to_state"])


async def lock_order(conn: AsyncConnection, order_id: str | uuid.UUID) -> Row[Any] | None:
    return (await conn.execute(select(orders).where(orders.c.id == _uuid(order_id)).with_for_update())).first()


async def get_order(conn: AsyncConnection, order_id: str | uuid.UUID) -> Row[Any] | None:
    return (await conn.execute(select(orders).where(orders.c.id == _uuid(order_id)))).first()


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


async def record_creation(conn: AsyncConnection, order_id: uuid.UUID, *, actor: str) -> None:
    await conn.execute(
        insert(order_transitions).values(
            order_id=order_id, from_state=None, to_state=OrderState.DRAFT, reason="checkout", actor=actor
        )
    )


async def transition(
    conn: AsyncConnection,
    order: Row[Any],
    target: OrderState,
    *,
    reason: str,
    actor: str,
    event_id: str | None = None,
    **columns: Any,
) -> bool:
    """Apply target if the table allows it from the order's current state; refuse and log otherwise."""
    current = OrderState(order.state)
    if not ORDER_LIFECYCLE.can(current, target):
        REFUSED.labels(current, target).inc()
        log.warning("order transition refused", order_id=str(order.id), current=current, target=target, reason=reason)
        return False
    await conn.execute(
        update(orders)
        .where(orders.c.id == order.id, orders.c.state == current)
        .values(state=target, updated_at=func.now(), **columns)
    )
    await conn.execute(
        insert(order_transitions).values(
            order_id=order.id, from_state=current, to_state=target, reason=reason, actor=actor, event_id=event_id
        )
    )
    TRANSITIONS.labels(current, target).inc()
    log.info("order transition", order_id=str(order.id), from_state=current, to_state=target, reason=reason)
    return True


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
