"""HTTP routes of webhook-ingest: the Stripe webhook endpoint and read-only admin views."""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Row, func, select, tuple_

from handshake_shared.auth import Principal, require_roles
from handshake_shared.db import Database, MessagingTables
from handshake_shared.http import Problem, require_idempotency_key
from handshake_webhook_ingest.db import provider_event_replays as replays
from handshake_webhook_ingest.db import provider_events as pe
from handshake_webhook_ingest.ingest import KeyReused, StripeIngest
from handshake_webhook_ingest.metrics import WEBHOOK_ACK_SECONDS, WEBHOOK_REJECTED
from handshake_webhook_ingest.settings import WebhookIngestSettings
from handshake_webhook_ingest.stripe_events import StripeEvent
from handshake_webhook_ingest.verification import Rejected, verify

log = structlog.get_logger("api")

Authorization = Annotated[str | None, Header()]

# Text a request may carry: no control characters (PostgreSQL cannot store NUL in text; the others end up
# in the audit rows and logs).
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"
# provider ids (evt_..., pi_...) and the order ids of their metadata are far shorter
ProviderId = Annotated[str, Path(min_length=1, max_length=255, pattern=PRINTABLE)]
IdFilter = Annotated[str | None, Query(max_length=255, pattern=PRINTABLE)]
# the opaque position after the last event of a page (base64url of the sort key)
Cursor = Annotated[str | None, Query(max_length=700, pattern=r"^[A-Za-z0-9_-]+={0,2}$")]


class ReplayRequest(BaseModel):
    reason: str = Field(
        min_length=3, max_length=2000, pattern=PRINTABLE, description="why the event is forwarded again (audited)"
    )


_PAYLOAD_REASONS = {"invalid_json", "not_an_event", "invalid_content_length"}


@dataclass
class IngestContext:
    db: Database
    settings: WebhookIngestSettings
    messaging: MessagingTables
    ingest: StripeIngest


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it is known to exceed the limit (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected("invalid_content_length", "Content-Length is not a number")
        if int(declared) > limit:
            raise Rejected("too_large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected("too_large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def rejection_problem(rejected: Rejected) -> Problem:
    if rejected.reason == "too_large":
        return Problem(413, "Payload too large", rejected.detail, type="webhook-payload-too-large")
    if rejected.reason in _PAYLOAD_REASONS:
        title, kind = "Invalid webhook payload", "webhook-payload-invalid"
    else:
        title, kind = "Invalid webhook signature", "webhook-signature-invalid"
    return Problem(400, title, rejected.detail, type=kind, reason=rejected.reason)


def _cursor(row: Row[Any]) -> str:
    key = [row.created, row.first_received_at.isoformat(), row.provider_event_id]
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode()


def _after(cursor: str) -> tuple[int, datetime, str]:
    try:
        created, received, event_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        at = datetime.fromisoformat(received)
        if at.tzinfo is None or not -(2**63) <= int(created) < 2**63:
            raise ValueError("not a cursor of ours")
        # in UTC, as the driver sends it: a forged offset at the calendar's edge fails here, not in the driver
        return int(created), at.astimezone(UTC), str(event_id)
    except (binascii.Error, ValueError, TypeError, OverflowError):
        raise Problem(
            400, "Invalid cursor", "pass the `next` of the previous page unchanged", type="invalid-cursor"
        ) from None


def forwarding(row: Row[Any]) -> str | None:
    """Where the event's forward stands: published (the broker has it), pending (in the outbox), parked (the
    broker keeps refusing it, an admin must release it); None if it was never forwarded. Retention deletes
    only published outbox rows, so a forward whose row is gone was published."""
    if row.forwarded_event_id is None:
        return None
    if row.outbox_id is None or row.forwarded_at is not None:
        return "published"
    return "parked" if row.outbox_parked_at is not None else "pending"


def summary(row: Row[Any]) -> dict[str, Any]:
    return {
        "provider_event_id": row.provider_event_id,
        "type": row.type,
        "api_version": row.api_version,
        "livemode": row.livemode,
        "created": row.created,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "payment_intent_id": row.payment_intent_id,
        "order_id": row.order_id,
        "attempt_id": row.attempt_id,
        "delivery_count": row.delivery_count,
        "first_received_at": row.first_received_at.isoformat(),
        "last_received_at": row.last_received_at.isoformat(),
        "forwarded_event_id": str(row.forwarded_event_id) if row.forwarded_event_id else None,
        "forwarded_at": row.forwarded_at.isoformat() if row.forwarded_at else None,
        "forwarding": forwarding(row),
        "source": row.source,
        # every stored webhook delivery passed the signature check before it was stored; a gap-scan event was
        # fetched from Stripe and never signed. The proof (signature header) is dropped when the body is scrubbed
        "signature": "verified" if row.source == "webhook" else "unsigned",
        "signature_proof_held": row.signature_header is not None,
        "scrubbed_at": row.scrubbed_at.isoformat() if row.scrubbed_at else None,
    }


def replay_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "replay_id": row.id,
        "actor": row.actor,
        "reason": row.reason,
        "replayed_at": row.replayed_at.isoformat(),
        "forwarded_event_id": str(row.forwarded_event_id),
    }


def build_router(ctx: IngestContext) -> APIRouter:
    router = APIRouter()
    secrets = [s.get_secret_value() for s in ctx.settings.stripe_webhook_secrets]
    ob = ctx.messaging.outbox
    # forwarded_at: when the broker acknowledged the forwarded event (null while it waits in the outbox)
    listed = select(
        *[c for c in pe.c if c.name not in ("raw_body", "payload")],
        ob.c.published_at.label("forwarded_at"),
        ob.c.id.label("outbox_id"),
        ob.c.parked_at.label("outbox_parked_at"),
    ).select_from(pe.outerjoin(ob, ob.c.event_id == pe.c.forwarded_event_id))

    async def with_replays(conn: Any, rows: list[Row[Any]]) -> list[dict[str, Any]]:
        ids = [r.provider_event_id for r in rows]
        found = (
            (
                await conn.execute(select(replays).where(replays.c.provider_event_id.in_(ids)).order_by(replays.c.id))
            ).all()
            if ids
            else []
        )
        views = [{**summary(r), "replays": []} for r in rows]
        by_id = {v["provider_event_id"]: v for v in views}
        for replay in found:
            by_id[replay.provider_event_id]["replays"].append(replay_view(replay))
        return views

    @router.post("/webhooks/stripe")
    async def stripe_webhook(
        request: Request,
        stripe_signature: Annotated[str | None, Header()] = None,
        traceparent: Annotated[str | None, Header()] = None,
    ) -> dict[str, bool]:
        started = time.perf_counter()
        outcome = "rejected"
        try:
            body = await read_limited(request, ctx.settings.webhook_max_body_bytes)
            event = StripeEvent.from_verified(
                verify(body, stripe_signature, secrets, ctx.settings.webhook_tolerance_seconds)
            )
            inserted = await ctx.ingest.store(event, body, traceparent, signature_header=stripe_signature)
            outcome = "accepted" if inserted else "duplicate"
            return {"received": True, "duplicate": not inserted}
        except Rejected as rejected:
            WEBHOOK_REJECTED.labels("stripe", rejected.reason).inc()
            log.warning("webhook rejected", reason=rejected.reason)
            raise rejection_problem(rejected) from None
        finally:
            WEBHOOK_ACK_SECONDS.labels("stripe", outcome).observe(time.perf_counter() - started)

    @router.get("/v1/admin/provider-events")
    async def list_provider_events(
        authorization: Authorization = None,
        order_id: IdFilter = None,
        payment_intent_id: IdFilter = None,
        after: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """In the provider's order (its `created`, then arrival); the next page starts after `next`."""
        require_roles(ctx.settings, authorization, "support", "finance", "admin")
        if not order_id and not payment_intent_id:
            raise Problem(400, "Filter required", "pass order_id or payment_intent_id", type="filter-required")
        query = listed
        if order_id:
            query = query.where(pe.c.order_id == order_id)
        if payment_intent_id:
            query = query.where(pe.c.payment_intent_id == payment_intent_id)
        if after is not None:
            query = query.where(tuple_(pe.c.created, pe.c.first_received_at, pe.c.provider_event_id) > _after(after))
        query = query.order_by(pe.c.created, pe.c.first_received_at, pe.c.provider_event_id).limit(limit + 1)
        async with ctx.db.read() as conn:
            rows: list[Any] = list((await conn.execute(query)).all())
            events = await with_replays(conn, rows[:limit])
        return {"provider_events": events, "next": _cursor(rows[limit - 1]) if len(rows) > limit else None}

    @router.get("/v1/admin/provider-events/{provider_event_id}")
    async def get_provider_event(provider_event_id: ProviderId, authorization: Authorization = None) -> dict[str, Any]:
        require_roles(ctx.settings, authorization, "support", "finance", "admin")
        query = listed.add_columns(
            pe.c.payload,
            func.octet_length(pe.c.raw_body).label("raw_body_bytes"),
            func.encode(func.sha256(pe.c.raw_body), "hex").label("raw_body_sha256"),
        ).where(pe.c.provider_event_id == provider_event_id)
        async with ctx.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
            if row is None:
                raise Problem(404, "Provider event not found", type="provider-event-not-found")
            [view] = await with_replays(conn, [row])
        # the payload is stored without client secrets; the raw body (which has them) is never served
        return {
            **view,
            "payload": row.payload,
            "raw_body_bytes": row.raw_body_bytes,
            "raw_body_sha256": row.raw_body_sha256,
        }

    def support_or_admin(authorization: Authorization = None) -> Principal:
        # a dependency, so it is decided before the body is validated: a customer gets 403, not 422
        return require_roles(ctx.settings, authorization, "support", "admin")

    @router.post("/v1/admin/provider-events/{provider_event_id}/replay", status_code=202)
    async def replay_provider_event(
        provider_event_id: ProviderId,
        body: ReplayRequest,
        traceparent: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header()] = None,
        principal: Principal = Depends(support_or_admin),  # noqa: B008 - a local dependency
    ) -> JSONResponse:
        """Forward a stored event again, once per Idempotency-Key of the staff member: a repeat answers the
        first replay (Idempotent-Replayed: true); the same key with another event or reason is refused."""
        reason = body.reason.strip()
        if len(reason) < 3:
            raise Problem(422, "Invalid request", "reason must have at least 3 characters", type="invalid-request")
        key = require_idempotency_key(idempotency_key)
        try:
            replay = await ctx.ingest.replay(
                provider_event_id,
                actor=principal.subject,
                reason=reason,
                traceparent=traceparent,
                idempotency_key=key,
            )
        except KeyReused:
            raise Problem(
                422,
                "Idempotency-Key reused",
                "this Idempotency-Key was already used with a different request",
                type="idempotency-key-reused",
            ) from None
        if replay is None:
            raise Problem(404, "Provider event not found", type="provider-event-not-found")
        answer = {
            "replay_id": replay.id,
            "provider_event_id": replay.provider_event_id,
            "forwarded_event_id": str(replay.forwarded_event_id),
            "actor": replay.actor,
            "reason": replay.reason,
        }
        return JSONResponse(
            answer, status_code=202, headers={"Idempotent-Replayed": "true"} if replay.repeated else None
        )

    return router
