"""Provider events that arrive before we know their PaymentIntent: parked, then applied once an attempt
stores (recovery point 2) or adopts (metadata.attempt_id) that intent, through the live webhook path.

A parked row is written in the consumer's transaction (with its inbox row), under an advisory lock on the
intent id that whoever applies parked events of that intent takes too, after the intent id is committed:
so either the parker sees the stored intent (and applies the event live) or the applier sees the parked
row. applied_at makes applying idempotent; rows are applied in the provider's `created` order."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.db import parked_provider_events as parked
from handshake_shared.envelope import CloudEvent, parse_event
from handshake_shared.events import provider as prov
from handshake_shared.locks import AdvisoryLock, lock_for_transaction


class ParkedRow(Protocol):
    """A parked_provider_events row as this module returns it (db.py says what each column is for)."""

    id: int
    provider_event_id: str
    payment_intent_id: str
    type: str
    provider_created: int
    payload: dict[str, Any]
    parked_at: datetime
    applied_at: datetime | None


async def lock_intent(conn: AsyncConnection, intent_id: str) -> None:
    await lock_for_transaction(conn, AdvisoryLock.PAYMENT_PARKING, intent_id)


async def park(conn: AsyncConnection, event: CloudEvent, p: prov.ProviderStripeEvent, intent_id: str) -> bool:
    """Keep the event for later; False when this provider event was parked before."""
    row = (
        await conn.execute(
            pg_insert(parked)
            .values(
                provider_event_id=p.provider_event_id,
                payment_intent_id=intent_id,
                type=p.provider_type,
                provider_created=p.created,
                payload=json.loads(event.to_bytes()),
            )
            .on_conflict_do_nothing(index_elements=[parked.c.provider_event_id])
            .returning(parked.c.id)
        )
    ).first()
    if row is not None:
        metrics.PARKED.labels("parked").inc()
    return row is not None


async def next_pending(conn: AsyncConnection, intent_id: str) -> ParkedRow | None:
    query = (
        select(parked)
        .where(parked.c.payment_intent_id == intent_id, parked.c.applied_at.is_(None))
        .order_by(parked.c.provider_created, parked.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return cast("ParkedRow | None", (await conn.execute(query)).first())


async def mark_applied(conn: AsyncConnection, row_id: int) -> None:
    await conn.execute(update(parked).where(parked.c.id == row_id).values(applied_at=func.now()))


def event_of(row: ParkedRow) -> tuple[CloudEvent, prov.ProviderStripeEvent]:
    event = parse_event(json.dumps(row.payload))
    return event, prov.ProviderStripeEvent.model_validate(event.data)
