"""Store a verified event and forward its first delivery, in one transaction, before we answer 200.

The same code stores events found by the gap scan (source "gap_scan") and re-forwards stored events on
an audited replay: every provider.stripe.event leaves through `forward`, i.e. the outbox."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import structlog
from sqlalchemy import func, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.dialects.postgresql import insert as pg_insert

from handshake_shared.db import Database
from handshake_shared.events import PROVIDER_EVENTS
from handshake_shared.envelope import CloudEvent
from handshake_shared.outbox import Outbox
from handshake_webhook_ingest.db import provider_event_replays
from handshake_webhook_ingest.db import provider_events as pe
from handshake_webhook_ingest.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DUPLICATES, WEBHOOK_REPLAYS
from handshake_webhook_ingest.stripe_events import StripeEvent

log = structlog.get_logger("ingest")

EVENT_TYPE = "provider.stripe.event"

Source = Literal["webhook", "gap_scan"]


@dataclass(frozen=True)
class Replay:
    id: int
    provider_event_id: str
    forwarded_event_id: uuid.UUID


class StripeIngest:
    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox

    async def forward(self, conn: AsyncConnection, event: StripeEvent, traceparent: str | None = None) -> CloudEvent:
        """Write the provider.stripe.event for this provider event to the outbox, in the caller's transaction."""
        return await self.outbox.emit(
            conn,
            topic=PROVIDER_EVENTS,
            type=EVENT_TYPE,
            order_id=event.message_key,
            data=event.forwarded(),
            traceparent=traceparent,
        )

    async def store(
        self, event: StripeEvent, raw_body: bytes, traceparent: str | None = None, *, source: Source = "webhook"
    ) -> bool:
        """True when this was the first time we saw the event (it is then forwarded); a repeated webhook
        delivery is only counted, and a gap scan finding an event we already have changes nothing."""
        insert = pg_insert(pe).values(
            provider_event_id=event.provider_event_id,
            type=event.type,
            api_version=event.api_version,
            livemode=event.livemode,
            created=event.created,
            object_type=event.object_type,
            object_id=event.object_id,
            payment_intent_id=event.payment_intent_id,
            order_id=event.order_id,
            attempt_id=event.attempt_id,
            raw_body=raw_body,
            payload=event.payload,
            source=source,
        )
        # Concurrent deliveries of one event serialise on the primary key: exactly one sees a fresh
        # insert (xmax = 0), so exactly one writes the outbox row.
        upsert = insert.on_conflict_do_update(
            index_elements=[pe.c.provider_event_id],
            set_=(
                {"delivery_count": pe.c.delivery_count + 1, "last_received_at": func.now()}
                if source == "webhook"
                # not a delivery: a no-op update, so the row is locked and RETURNING still answers
                else {"delivery_count": pe.c.delivery_count}
            ),
        ).returning(literal_column("(xmax = 0)").label("inserted"))
        async with self.db.transaction() as conn:
            inserted = bool((await conn.execute(upsert)).scalar_one())
            if inserted:
                forwarded = await self.forward(conn, event, traceparent)
                await conn.execute(
                    update(pe)
                    .where(pe.c.provider_event_id == event.provider_event_id)
                    .values(forwarded_event_id=forwarded.id)
                )
        if source == "webhook":
            WEBHOOK_DELIVERIES.labels("stripe", event.type).inc()
            if not inserted:
                WEBHOOK_DUPLICATES.labels("stripe").inc()
        log.info(
            "provider event stored",
            provider_event_id=event.provider_event_id,
            provider_type=event.type,
            order_id=event.order_id,
            duplicate=not inserted,
            source=source,
        )
        return inserted

    async def replay(
        self, provider_event_id: str, *, actor: str, reason: str, traceparent: str | None = None
    ) -> Replay | None:
        """Forward a stored event again as a new CloudEvent (same provider_event_id, same normalised data)
        and audit it, in one transaction. None when no such event is stored."""
        async with self.db.transaction() as conn:
            payload = (
                await conn.execute(
                    select(pe.c.payload).where(pe.c.provider_event_id == provider_event_id).with_for_update()
                )
            ).scalar_one_or_none()
            if payload is None:
                return None
            # the stored payload is the verified event with secrets removed; it normalises to the same data
            event = StripeEvent.from_verified(payload)
            forwarded = await self.forward(conn, event, traceparent)
            replay_id = (
                await conn.execute(
                    insert(provider_event_replays)
                    .values(
                        provider_event_id=provider_event_id,
                        actor=actor,
                        reason=reason,
                        forwarded_event_id=forwarded.id,
                    )
                    .returning(provider_event_replays.c.id)
                )
            ).scalar_one()
        WEBHOOK_REPLAYS.labels("stripe").inc()
        log.warning("provider event replayed", provider_event_id=provider_event_id, actor=actor, reason=reason)
        return Replay(id=replay_id, provider_event_id=provider_event_id, forwarded_event_id=forwarded.id)
