"""Webhook gap detection: list the provider's events and ingest those no webhook brought.

Stripe retries a webhook for days, but an endpoint that was down, misconfigured or deleted, or a
delivery the provider dropped, leaves a gap that only listing the events closes. Each missing event
goes through exactly the storing/forwarding code of the webhook endpoint (StripeIngest.store), marked
source="gap_scan"; the provider event id deduplicates against webhooks, earlier scans and other replicas.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import stripe
import structlog
from sqlalchemy import insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from handshake_shared.db import Database
from handshake_shared.locks import AdvisoryLock
from handshake_shared.loops import BackgroundLoop
from handshake_webhook_ingest.db import gap_scans, provider_event_cursor, provider_events
from handshake_webhook_ingest.ingest import StripeIngest
from handshake_webhook_ingest.metrics import GAP_EVENTS, GAP_SCANS
from handshake_webhook_ingest.settings import WebhookIngestSettings
from handshake_webhook_ingest.stripe_events import StripeEvent
from handshake_webhook_ingest.verification import Rejected

log = structlog.get_logger("gap_scan")

PROVIDER = "stripe"
PAGE_SIZE = 100


class GapScanner:
    def __init__(self, db: Database, ingest: StripeIngest, settings: WebhookIngestSettings) -> None:
        self.db = db
        self.ingest = ingest
        self.settings = settings
        # The first scan comes one interval after start: webhooks are the primary path, and a replica restarting
        # in a loop should not list the provider's events on every start. A scan lists pages from the provider,
        # so a stop gives it longer than a database batch to finish and record itself.
        self.loop = BackgroundLoop(
            "gap_scan",
            self._round,
            interval_seconds=settings.gap_scan_interval_seconds,
            run_at_start=False,
            stop_grace_seconds=20.0,
        )
        self.client: stripe.StripeClient | None = None
        if settings.stripe_api_key is not None:
            base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
            self.client = stripe.StripeClient(
                settings.stripe_api_key.get_secret_value(),
                base_addresses=base,  # type: ignore[arg-type]
                max_network_retries=2,
                # synchronous client, called from a worker thread (asyncio.to_thread)
                http_client=stripe.RequestsClient(timeout=settings.stripe_timeout_seconds),
            )

    @property
    def enabled(self) -> bool:
        return self.client is not None and self.settings.gap_scan_interval_seconds > 0

    def _list_page(self, created_gte: int, starting_after: str | None) -> dict[str, Any]:
        """One page of events as the API sent it (plain JSON, newest first). Synchronous: run off the loop."""
        assert self.client is not None
        params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": PAGE_SIZE}
        if starting_after:
            params["starting_after"] = starting_after
        page = self.client.v1.events.list(params=params)  # type: ignore[arg-type]
        # parsed from the response body: the SDK's objects are not a faithful copy of the JSON
        response = page.last_response
        return json.loads(response.body) if response is not None else page.to_dict()

    async def _list_since(self, created_gte: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        starting_after: str | None = None
        while True:
            page = await asyncio.to_thread(self._list_page, created_gte, starting_after)
            data = [e for e in page.get("data") or [] if isinstance(e, dict)]
            events += data
            if not page.get("has_more") or not data:
                return events
            starting_after = data[-1].get("id")

    async def _cursor(self) -> int:
        async with self.db.read() as conn:
            last = (
                await conn.execute(
                    select(provider_event_cursor.c.last_created).where(provider_event_cursor.c.provider == PROVIDER)
                )
            ).scalar_one_or_none()
        if last is None:
            return int(datetime.now(UTC).timestamp()) - self.settings.gap_scan_initial_lookback_seconds
        return max(0, int(last) - self.settings.gap_scan_overlap_seconds)

    async def scan_once(self) -> dict[str, int] | None:
        """One scan: list events since the cursor, ingest the missing ones, advance the cursor, record the run.
        None when no API key is configured or another replica is scanning right now."""
        if self.client is None:
            return None
        # one replica scans at a time; the others skip that round
        async with self.db.held_by_one_replica(AdvisoryLock.GAP_SCAN) as mine:
            if not mine:
                GAP_SCANS.labels(PROVIDER, "skipped").inc()
                return None
            return await self._scan_locked()

    async def _scan_locked(self) -> dict[str, int]:
        listed_from = await self._cursor()
        async with self.db.transaction() as conn:
            scan_id = (
                await conn.execute(
                    insert(gap_scans)
                    .values(provider=PROVIDER, started_at=datetime.now(UTC), listed_from=listed_from)
                    .returning(gap_scans.c.id)
                )
            ).scalar_one()
        listed = ingested = 0
        try:
            events = await self._list_since(listed_from)
            listed = len(events)
            ids = [e["id"] for e in events if isinstance(e.get("id"), str)]
            async with self.db.read() as conn:
                known = (
                    set(
                        (
                            await conn.execute(
                                select(provider_events.c.provider_event_id).where(
                                    provider_events.c.provider_event_id.in_(ids)
                                )
                            )
                        ).scalars()
                    )
                    if ids
                    else set()
                )
            # oldest first, as the webhooks would have come
            for raw in sorted(events, key=lambda e: (e.get("created") or 0, e.get("id") or "")):
                if raw.get("id") in known:
                    continue
                try:
                    event = StripeEvent.from_verified(raw)
                except Rejected:
                    log.error("gap scan listed something that is not an event", provider_event_id=raw.get("id"))
                    continue
                body = json.dumps(raw, separators=(",", ":")).encode()
                # store() deduplicates again: a webhook may arrive between the check above and here
                if await self.ingest.store(event, body, source="gap_scan"):
                    ingested += 1
                    GAP_EVENTS.labels(PROVIDER).inc()
                    log.warning(
                        "provider event missing from webhooks ingested by the gap scan",
                        provider_event_id=event.provider_event_id,
                        provider_type=event.type,
                        order_id=event.order_id,
                    )
            newest = max((int(e["created"]) for e in events if isinstance(e.get("created"), int)), default=None)
            async with self.db.transaction() as conn:
                cursor_after = None
                if newest is not None:
                    upsert = pg_insert(provider_event_cursor).values(provider=PROVIDER, last_created=newest)
                    cursor_after = (
                        await conn.execute(
                            upsert.on_conflict_do_update(
                                index_elements=[provider_event_cursor.c.provider],
                                set_={
                                    # never backwards
                                    "last_created": text(
                                        "GREATEST(provider_event_cursor.last_created, excluded.last_created)"
                                    ),
                                    "updated_at": text("now()"),
                                },
                            ).returning(provider_event_cursor.c.last_created)
                        )
                    ).scalar_one()
                await conn.execute(
                    update(gap_scans)
                    .where(gap_scans.c.id == scan_id)
                    .values(finished_at=datetime.now(UTC), listed=listed, ingested=ingested, cursor_after=cursor_after)
                )
        except Exception as exc:
            GAP_SCANS.labels(PROVIDER, "failed").inc()
            log.exception("gap scan failed", listed=listed, ingested=ingested)
            async with self.db.transaction() as conn:
                await conn.execute(
                    update(gap_scans)
                    .where(gap_scans.c.id == scan_id)
                    .values(finished_at=datetime.now(UTC), listed=listed, ingested=ingested, error=repr(exc)[:2000])
                )
            raise
        GAP_SCANS.labels(PROVIDER, "completed").inc()
        log.info("gap scan finished", listed=listed, ingested=ingested, listed_from=listed_from)
        return {"scan_id": scan_id, "listed": listed, "ingested": ingested}

    async def _round(self) -> None:
        await self.scan_once()  # a failed scan is recorded in gap_scans and counted; the loop backs off
