"""Store a verified event and forward its first delivery, in one transaction, before we answer 200."""

from __future__ import annotations

import structlog
from sqlalchemy import func, literal_column, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from handshake_shared.db import Database
from handshake_shared.events import PROVIDER_EVENTS
from handshake_shared.outbox import Outbox
from handshake_webhook_ingest.db import provider_events as pe
from handshake_webhook_ingest.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DUPLICATES
from handshake_webhook_ingest.stripe_events import StripeEvent

log = structlog.get_logger("ingest")

EVENT_TYPE = "provider.stripe.event"


class StripeIngest:
    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox

    async def store(self, event: StripeEvent, raw_body: bytes, traceparent: str | None = None) -> bool:
        """True when this delivery was the first of its event; a repeat is only counted."""
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
        )
        # Concurrent deliveries of one event serialise on the primary key: exactly one sees a fresh
        # insert (xmax = 0), so exactly one writes the outbox row.
        upsert = insert.on_conflict_do_update(
            index_elements=[pe.c.provider_event_id],
            set_={"delivery_count": pe.c.delivery_count + 1, "last_received_at": func.now()},
        ).returning(literal_column("(xmax = 0)").label("inserted"))
        async with self.db.transaction() as conn:
            inserted = bool((await conn.execute(upsert)).scalar_one())
            if inserted:
                forwarded = await self.outbox.emit(
                    conn,
                    topic=PROVIDER_EVENTS,
                    type=EVENT_TYPE,
                    order_id=event.message_key,
                    data=event.forwarded(),
                    traceparent=traceparent,
                )
                await conn.execute(
                    update(pe)
                    .where(pe.c.provider_event_id == event.provider_event_id)
                    .values(forwarded_event_id=forwarded.id)
                )
        WEBHOOK_DELIVERIES.labels("stripe", event.type).inc()
        if not inserted:
            WEBHOOK_DUPLICATES.labels("stripe").inc()
        log.info(
            "provider event stored",
            provider_event_id=event.provider_event_id,
            provider_type=event.type,
            order_id=event.order_id,
            duplicate=not inserted,
        )
        return inserted
