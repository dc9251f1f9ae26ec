"""What webhook-ingest stops keeping: the personal data in old stored events, and old gap-scan records.

A stored event keeps, for as long as the row lives, what reconciliation, disputes and an audited replay
need: the event's id, type, created, livemode, and of its object (and of any object nested in it: an
expanded charge, a refunds list) the ids, amounts, currency, status, reasons and the order/attempt/refund
ids we put in its metadata. Everything else (client secret, billing details, e-mail, shipping address,
card details, free-text descriptions) is removed once the event is older than the window. The body then no
longer matches the Stripe-Signature it came with, so the header goes too: a replay of a scrubbed event is
forwarded without a seal, and the payment service confirms it with the provider by id instead."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared.retention import RetentionJob, purge
from handshake_webhook_ingest.db import gap_scans
from handshake_webhook_ingest.db import provider_events as pe
from handshake_webhook_ingest.settings import WebhookIngestSettings

EVENT_KEYS = frozenset({"id", "object", "type", "created", "api_version", "livemode", "data"})
# an allowlist: a field Stripe adds tomorrow is dropped, not kept by accident
OBJECT_KEYS = frozenset(
    {
        "id",
        "object",
        "created",
        "livemode",
        "amount",
        "amount_received",
        "amount_capturable",
        "amount_refunded",
        "currency",
        "status",
        "payment_intent",
        "charge",
        "latest_charge",
        "refunds",
        "data",
        "has_more",
        "captured",
        "paid",
        "refunded",
        "reason",
        "cancellation_reason",
        "capture_method",
        "failure_code",
        "balance_transaction",
        "last_payment_error",
        "code",
        "decline_code",
        "is_charge_refundable",
        "metadata",
    }
)
METADATA_KEYS = frozenset({"order_id", "attempt_id", "refund_id"})


def _kept(value: Any) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "metadata":
                if isinstance(item, dict):
                    out[key] = {k: v for k, v in item.items() if k in METADATA_KEYS and isinstance(v, str)}
            elif key in OBJECT_KEYS:
                out[key] = _kept(item)
        return out
    if isinstance(value, list):
        return [_kept(v) for v in value]
    return value


def scrubbed_event(event: dict[str, Any]) -> dict[str, Any]:
    """The stored event reduced to what reconciliation, disputes and a replay need."""
    out = {k: v for k, v in event.items() if k in EVENT_KEYS and k != "data"}
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    # previous_attributes goes: it is whatever changed, personal data included
    out["data"] = {"object": _kept(obj) if isinstance(obj, dict) else {}}
    return out


def scrub_job(settings: WebhookIngestSettings) -> RetentionJob | None:
    keep = timedelta(days=settings.webhook_body_retention_days)
    if keep <= timedelta(0):
        return None

    async def batch(conn: AsyncConnection, limit: int, now: datetime) -> int:
        rows = (
            await conn.execute(
                select(pe.c.provider_event_id, pe.c.payload)
                .where(pe.c.scrubbed_at.is_(None), pe.c.first_received_at < now - keep)
                .order_by(pe.c.first_received_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            return 0
        values = []
        for row in rows:
            kept = scrubbed_event(row.payload)
            values.append(
                {
                    "b_id": row.provider_event_id,
                    "b_payload": kept,
                    "b_raw": json.dumps(kept, separators=(",", ":")).encode(),
                }
            )
        await conn.execute(
            update(pe)
            .where(pe.c.provider_event_id == bindparam("b_id"))
            .values(
                raw_body=bindparam("b_raw"), payload=bindparam("b_payload"), signature_header=None, scrubbed_at=now
            ),
            values,
        )
        return len(rows)

    return RetentionJob("provider_events_scrub", batch)


def retention_jobs(settings: WebhookIngestSettings) -> list[RetentionJob | None]:
    return [
        scrub_job(settings),
        # finished scans only: a running one is still being written
        purge(
            "provider_event_gap_scans",
            gap_scans,
            age_column=gap_scans.c.started_at,
            keep=timedelta(days=settings.gap_scan_retention_days),
            where=[gap_scans.c.finished_at.is_not(None)],
            order_by=gap_scans.c.id,
        ),
    ]
