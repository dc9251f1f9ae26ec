"""Store a verified event and forward its first delivery, in one transaction, before we answer 200.

The same code stores events found by the gap scan (source "gap_scan") and re-forwards stored events on
an audited replay: every provider.stripe.event leaves through `forward`, i.e. the outbox."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from sqlalchemy import Row, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningInsert

from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent
from handshake_shared.events.provider import SealedDelivery, seal_delivery
from handshake_shared.outbox import Outbox
from handshake_webhook_ingest.db import provider_event_replays
from handshake_webhook_ingest.db import provider_events as pe
from handshake_webhook_ingest.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DUPLICATES, WEBHOOK_REPLAYS
from handshake_webhook_ingest.stripe_events import StripeEvent
from handshake_webhook_ingest.verification import signing_secret

log = structlog.get_logger("ingest")

Source = Literal["webhook", "gap_scan"]

# Larger deliveries go without their proof (the consumer then confirms them with the provider): sealed and
# next to the parsed object they would push the message past the broker's 1 MB default. Stripe's events
# are a few KB.
MAX_SEALED_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class Replay:
    id: int
    provider_event_id: str
    forwarded_event_id: uuid.UUID
    actor: str
    reason: str
    # answered from the actor's earlier replay with the same idempotency key: nothing was forwarded now
    repeated: bool = False


class StripeIngest:
    def __init__(self, db: Database, outbox: Outbox, webhook_secrets: Sequence[str]) -> None:
        self.db = db
        self.outbox = outbox
        self.webhook_secrets = list(webhook_secrets)

    def proof(self, raw_body: bytes, signature_header: str | None) -> SealedDelivery | None:
        """The delivery sealed under the secret that signed it; None when nothing we hold signed it (the
        gap scan's events, an event signed with a secret rotated away since) or it is too large to carry."""
        if len(raw_body) > MAX_SEALED_BODY_BYTES:
            return None
        secret = signing_secret(raw_body, signature_header, self.webhook_secrets)
        if secret is None or signature_header is None:
            return None
        return seal_delivery(raw_body, signature_header, secret)

    async def forward(
        self,
        conn: AsyncConnection,
        event: StripeEvent,
        traceparent: str | None = None,
        *,
        raw_body: bytes,
        signature_header: str | None,
    ) -> CloudEvent:
        """Write the provider.stripe.event for this provider event to the outbox, in the caller's transaction,
        with the signed delivery it came in as its proof."""
        return await self.outbox.emit(
            conn,
            event.forwarded(self.proof(raw_body, signature_header)),
            order_id=event.message_key,
            traceparent=traceparent,
        )

    async def store(
        self,
        event: StripeEvent,
        raw_body: bytes,
        traceparent: str | None = None,
        *,
        source: Source = "webhook",
        signature_header: str | None = None,
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
            signature_header=signature_header,
            payload=event.payload,
            source=source,
        )
        # Concurrent deliveries of one event serialise on the primary key: exactly one sees a fresh
        # insert (xmax = 0), so exactly one writes the outbox row.
        counted: dict[str, Any] = (
            {"delivery_count": pe.c.delivery_count + 1, "last_received_at": func.now()}
            if source == "webhook"
            # not a delivery: a no-op update, so the row is locked and RETURNING still answers
            else {"delivery_count": pe.c.delivery_count}
        )
        upsert: ReturningInsert[bool] = insert.on_conflict_do_update(
            index_elements=[pe.c.provider_event_id], set_=counted
        ).returning(literal_column("(xmax = 0)").label("inserted"))
        async with self.db.transaction() as conn:
            inserted = bool((await conn.execute(upsert)).scalar_one())
            if inserted:
                forwarded = await self.forward(
                    conn, event, traceparent, raw_body=raw_body, signature_header=signature_header
                )
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
        self,
        provider_event_id: str,
        *,
        actor: str,
        reason: str,
        traceparent: str | None = None,
        idempotency_key: str | None = None,
    ) -> Replay | None:
        """Forward a stored event again as a new CloudEvent (same provider_event_id, same normalised data)
        and audit it, in one transaction. None when no such event is stored.

        With an idempotency key, the actor's earlier replay under that key is answered instead (repeated=True),
        or KeyReused when it was for another event or reason. Two concurrent requests with one key meet on the
        replays table's unique index: the second waits for the first to commit, finds its row and rolls its own
        forward back, so the event leaves once."""
        if idempotency_key is not None:
            async with self.db.read() as conn:
                earlier = await _keyed_replay(conn, actor, idempotency_key)
            if earlier is not None:
                return _repeat(earlier, provider_event_id, reason)
        try:
            async with self.db.transaction() as conn:
                stored = (
                    await conn.execute(
                        select(pe.c.payload, pe.c.raw_body, pe.c.signature_header)
                        .where(pe.c.provider_event_id == provider_event_id)
                        .with_for_update()
                    )
                ).one_or_none()
                if stored is None:
                    return None
                # the stored payload is the verified event with secrets removed; it normalises to the same data,
                # and the stored delivery is its proof again
                event = StripeEvent.from_verified(stored.payload)
                forwarded = await self.forward(
                    conn, event, traceparent, raw_body=bytes(stored.raw_body), signature_header=stored.signature_header
                )
                replay_id = (
                    await conn.execute(
                        pg_insert(provider_event_replays)
                        .values(
                            provider_event_id=provider_event_id,
                            actor=actor,
                            reason=reason,
                            forwarded_event_id=forwarded.id,
                            idempotency_key=idempotency_key,
                        )
                        .on_conflict_do_nothing(index_elements=["actor", "idempotency_key"])
                        .returning(provider_event_replays.c.id)
                    )
                ).scalar_one_or_none()
                if replay_id is None:
                    raise _KeyTakenMeanwhile
        except _KeyTakenMeanwhile:
            assert idempotency_key is not None  # a null key never conflicts
            async with self.db.read() as conn:
                earlier = await _keyed_replay(conn, actor, idempotency_key)
            assert earlier is not None  # our insert gave way to it only once it was committed
            return _repeat(earlier, provider_event_id, reason)
        WEBHOOK_REPLAYS.labels("stripe").inc()
        log.warning("provider event replayed", provider_event_id=provider_event_id, actor=actor, reason=reason)
        return Replay(
            id=replay_id,
            provider_event_id=provider_event_id,
            forwarded_event_id=forwarded.id,
            actor=actor,
            reason=reason,
        )


class KeyReused(Exception):
    """The actor's idempotency key already answered a replay of another event, or with another reason."""


# an earlier replay under one idempotency key: id, provider_event_id, forwarded_event_id, actor, reason
ReplayRow = Row[Any, Any, Any, Any, Any]


class _KeyTakenMeanwhile(Exception):
    """A concurrent request with the same key committed first: this one's forward is rolled back."""


async def _keyed_replay(conn: AsyncConnection, actor: str, key: str) -> ReplayRow | None:
    r = provider_event_replays.c
    return (
        await conn.execute(
            select(r.id, r.provider_event_id, r.forwarded_event_id, r.actor, r.reason).where(
                r.actor == actor, r.idempotency_key == key
            )
        )
    ).one_or_none()


def _repeat(earlier: ReplayRow, provider_event_id: str, reason: str) -> Replay:
    if (earlier.provider_event_id, earlier.reason) != (provider_event_id, reason):
        raise KeyReused
    log.info("replay answered again", provider_event_id=provider_event_id, replay_id=earlier.id)
    return Replay(
        id=earlier.id,
        provider_event_id=earlier.provider_event_id,
        forwarded_event_id=earlier.forwarded_event_id,
        actor=earlier.actor,
        reason=earlier.reason,
        repeated=True,
    )
