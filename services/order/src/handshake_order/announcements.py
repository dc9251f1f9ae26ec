"""An order's events on order.events.v1 as the outbox holds them, and sending the announcement of its current
state again (a subscriber that lost it asks). A resend is a new event (fresh id, next sequence) with the same
type and payload as the announcement, marked by a Kafka header; subscribers are idempotent on order id and
state, and our own consumers act on a resent order.paid or order.refunded as on a duplicate."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order.db import messaging, order_notes, order_transitions, refunds
from handshake_order.domain.operations import ConfirmedRefund, LastTransition, rebuild_announcement
from handshake_order.domain.saga import OrderView
from handshake_order.domain.states import OrderState as S
from handshake_shared.envelope import build_event
from handshake_shared.events import ORDER_EVENTS
from handshake_shared.events import order as o
from handshake_shared.events.base import Line
from handshake_shared.outbox import Outbox

ob = messaging.outbox
# the Kafka header that marks an event sent again; its value is the id of the event it repeats, or "rebuilt"
RESEND_HEADER = "handshake-resend-of"
_MODELS = {model.event_type: model for model in o.ORDER_EVENT_MODELS}


def announcement_type(state: S) -> str:
    return "order.placed" if state == S.DRAFT else f"order.{state.value}"


def _data(payload: bytes) -> dict[str, Any]:
    try:
        return dict(json.loads(bytes(payload))["data"])
    except (ValueError, KeyError, TypeError):
        return {}


async def events_of(conn: AsyncConnection, order_id: uuid.UUID, *, after_id: int, limit: int) -> dict[str, Any]:
    """In the order they were written. `complete` is false when retention has already deleted published rows of
    this order: every event the order ever emitted took the next number of its sequence counter."""
    key = str(order_id)
    rows = (
        await conn.execute(
            select(ob)
            .where(ob.c.message_key == key, ob.c.topic == ORDER_EVENTS, ob.c.id > after_id)
            .order_by(ob.c.id)
            .limit(limit + 1)
        )
    ).all()
    kept = (
        await conn.execute(select(func.count()).where(ob.c.message_key == key, ob.c.sequence.isnot(None)))
    ).scalar_one()
    emitted = (
        await conn.execute(
            select(messaging.outbox_sequences.c.last_sequence).where(messaging.outbox_sequences.c.aggregate_id == key)
        )
    ).scalar()
    page = rows[:limit]
    return {
        "events": [
            {
                "id": r.id,
                "type": r.event_type,
                "event_id": str(r.event_id),
                "sequence": r.sequence,
                "time": r.created_at.isoformat(),
                "published": r.published_at is not None,
                "published_at": r.published_at.isoformat() if r.published_at else None,
                "parked": r.parked_at is not None,
                "resend_of": (r.headers or {}).get(RESEND_HEADER),
                "payload": _data(r.payload),
            }
            for r in page
        ],
        "complete": kept >= (emitted or 0),
        "next_after_id": page[-1].id if len(rows) > limit else None,
    }


async def _original(conn: AsyncConnection, view: OrderView) -> tuple[str, dict[str, Any]] | None:
    """The latest kept event that announced a move into the current state (a resend of it repeats its payload)."""
    rows = (
        await conn.execute(
            select(ob.c.event_id, ob.c.payload, ob.c.headers)
            .where(
                ob.c.message_key == view.id,
                ob.c.topic == ORDER_EVENTS,
                ob.c.event_type == announcement_type(view.state),
            )
            .order_by(ob.c.id.desc())
            .limit(20)
        )
    ).all()
    for r in rows:
        data = _data(r.payload)
        if (data.get("transition") or {}).get("to_state") == view.state.value:
            return (r.headers or {}).get(RESEND_HEADER) or str(r.event_id), data
    return None


async def _rebuilt(conn: AsyncConnection, view: OrderView, row: Row[Any]) -> dict[str, Any]:
    last = (
        await conn.execute(
            select(order_transitions)
            .where(order_transitions.c.order_id == row.id, order_transitions.c.to_state == view.state)
            .order_by(order_transitions.c.id.desc())
            .limit(1)
        )
    ).first()
    refund = (
        await conn.execute(
            select(refunds)
            .where(refunds.c.order_id == row.id, refunds.c.state == "succeeded")
            .order_by(refunds.c.updated_at.desc())
            .limit(1)
        )
    ).first()
    data = rebuild_announcement(
        view,
        LastTransition(
            from_state=last.from_state if last else None,
            to_state=view.state.value,
            reason=last.reason if last else "state announced again",
        ),
        lines=[Line(sku=line["sku"], quantity=line["quantity"]) for line in row.snapshot.get("lines", [])],
        hold_seconds=None if row.payment_session_opened else row.hold_seconds,
        refund=ConfirmedRefund(str(refund.id), refund.amount, refund.currency, refund.restock) if refund else None,
    )
    return data.model_dump(mode="json")


async def resend(
    conn: AsyncConnection, outbox: Outbox, view: OrderView, row: Row[Any], *, actor: str, reason: str
) -> dict[str, Any]:
    """Under the order's row lock: the announcement again, through the outbox, and a note saying who and why."""
    found = await _original(conn, view)
    source, data = found if found is not None else ("rebuilt", await _rebuilt(conn, view, row))
    event_type = announcement_type(view.state)
    _MODELS[event_type].model_validate(data)  # the payload still matches its published schema
    sequence = await outbox.next_sequence(conn, view.id)
    event = build_event(service=outbox.service, type=event_type, order_id=view.id, data=data, sequence=sequence)
    await outbox.put_raw(
        conn,
        topic=ORDER_EVENTS,
        key=view.id,
        event_id=event.id,
        event_type=event_type,
        sequence=sequence,
        payload=event.to_bytes(),
        headers={**event.kafka_headers(), RESEND_HEADER: source},
    )
    await conn.execute(
        insert(order_notes).values(
            order_id=row.id,
            kind="event-resent",
            actor=actor,
            detail=f"{event_type} sent again as event {event.id} (repeats {source}): {reason}",
        )
    )
    return {
        "order_id": view.id,
        "state": view.state.value,
        "event_type": event_type,
        "event_id": str(event.id),
        "sequence": sequence,
        "resend_of": source,
    }
