"""Admin routes over a service's outbox: see the rows parked after repeated refusals by the broker, and
release one for another attempt once its cause is fixed (topic created, size or ACL changed). Every
service mounts the same router; each release is recorded with who and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.engine import Row

from handshake_shared.admin_api import ReasonRequest, staff_with
from handshake_shared.auth import Principal
from handshake_shared.http import Problem

if TYPE_CHECKING:
    from handshake_shared.runtime import Runtime

log = structlog.get_logger("outbox-admin")


def parked_view(row: Row[Any]) -> dict[str, Any]:
    # the payload stays out: it may hold what only the topic's readers are meant to see
    return {
        "id": row.id,
        "event_id": str(row.event_id),
        "topic": row.topic,
        "key": row.message_key,
        "event_type": row.event_type,
        "sequence": row.sequence,
        "payload_bytes": row.payload_bytes,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "created_at": row.created_at.isoformat(),
        "parked_at": row.parked_at.isoformat() if row.parked_at else None,
    }


def outbox_admin_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/v1/admin/outbox", tags=["operations"])
    ob = runtime.tables.outbox

    admin = staff_with(runtime.settings, "admin")

    def parked_query() -> Select[Any]:
        return select(
            ob.c.id,
            ob.c.event_id,
            ob.c.topic,
            ob.c.message_key,
            ob.c.event_type,
            ob.c.sequence,
            ob.c.attempts,
            ob.c.last_error,
            ob.c.created_at,
            ob.c.parked_at,
            func.octet_length(ob.c.payload).label("payload_bytes"),
        ).where(ob.c.published_at.is_(None), ob.c.parked_at.is_not(None))

    @router.get("/parked")
    async def list_parked(
        _: Principal = Depends(admin),  # noqa: B008 - a local dependency
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        async with runtime.db.read() as conn:
            rows = (await conn.execute(parked_query().order_by(ob.c.id).limit(limit))).all()
        return {"service": runtime.service, "items": [parked_view(r) for r in rows]}

    @router.post("/{outbox_id}/release")
    async def release(
        outbox_id: Annotated[int, Path(ge=1)],
        body: ReasonRequest,
        principal: Principal = Depends(admin),  # noqa: B008 - a local dependency
    ) -> dict[str, Any]:
        releases = runtime.tables.outbox_releases
        async with runtime.db.transaction() as conn:
            row = (await conn.execute(parked_query().where(ob.c.id == outbox_id).with_for_update(of=ob))).first()
            if row is None:
                exists = (await conn.execute(select(ob.c.id).where(ob.c.id == outbox_id))).first()
                if exists is None:
                    raise Problem(404, "Outbox row not found", type="outbox-row-not-found")
                raise Problem(
                    409, "Outbox row not parked", f"outbox row {outbox_id} is not parked", type="outbox-row-not-parked"
                )
            await conn.execute(
                insert(releases).values(
                    outbox_id=row.id,
                    event_id=row.event_id,
                    actor=principal.subject,
                    reason=body.reason,
                    attempts=row.attempts,
                    last_error=row.last_error,
                    parked_at=row.parked_at,
                )
            )
            # a fresh budget of attempts: if the cause is not fixed, it is parked again and alerts again
            await conn.execute(
                update(ob).where(ob.c.id == row.id).values(parked_at=None, next_attempt_at=None, attempts=0)
            )
        runtime.db.outbox_written.set()  # publish now, not at the next poll
        log.warning(
            "parked outbox row released",
            outbox_id=row.id,
            topic=row.topic,
            key=row.message_key,
            actor=principal.subject,
            reason=body.reason,
        )
        return {**parked_view(row), "released_by": principal.subject, "reason": body.reason}

    return router
