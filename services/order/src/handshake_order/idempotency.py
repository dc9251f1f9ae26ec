"""Idempotency keys for commands that must happen once however often they are sent (checkout,
payment attempts, refunds). The key row is claimed in the command's own transaction: a concurrent
duplicate blocks on the unique index until the first commits, then replays its stored answer; a
command whose process died rolled back its claim and is simply done again."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order.db import idempotency_keys
from handshake_order.metrics import IDEMPOTENT_REPLAYS
from handshake_order.settings import OrderSettings
from handshake_shared.db import Database
from handshake_shared.http import Problem
from handshake_shared.loops import BackgroundLoop


class CanonicalJSONResponse(JSONResponse):
    """Sorted keys: the first answer and its replays (read back from JSONB, which reorders keys)
    are byte-for-byte identical."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(command: str, body: BaseModel | dict[str, Any]) -> str:
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return hashlib.sha256(json.dumps({"command": command, "body": data}, sort_keys=True).encode()).hexdigest()


# every checkout runs these: built once (handshake_shared.db.built_once says why); parameters are not named
# like the columns, which SQLAlchemy reserves for the values it binds itself
_CLAIM = (
    pg_insert(idempotency_keys)
    .values(
        scope=bindparam("in_scope"),
        key=bindparam("the_key"),
        request_hash=bindparam("hash"),
        status_code=0,
        response={},
    )
    .on_conflict_do_nothing()
    .returning(idempotency_keys.c.key)
)
_STORED = select(idempotency_keys).where(
    idempotency_keys.c.scope == bindparam("in_scope"), idempotency_keys.c.key == bindparam("the_key")
)
_STORE = (
    update(idempotency_keys)
    .where(idempotency_keys.c.scope == bindparam("in_scope"), idempotency_keys.c.key == bindparam("the_key"))
    .values(status_code=bindparam("status"), response=bindparam("body"), order_id=bindparam("order"))
)


async def claim(
    conn: AsyncConnection, *, scope: str, key: str, request_hash: str, command: str
) -> tuple[int, dict[str, Any]] | None:
    """None: this request owns the key, do the work and call store(). Otherwise the stored answer."""
    claimed = (await conn.execute(_CLAIM, {"in_scope": scope, "the_key": key, "hash": request_hash})).first()
    if claimed is not None:
        return None
    stored = (await conn.execute(_STORED, {"in_scope": scope, "the_key": key})).one()
    if stored.request_hash != request_hash:
        raise Problem(
            422,
            "Idempotency-Key reused",
            "this Idempotency-Key was already used with a different request",
            type="idempotency-key-reused",
        )
    IDEMPOTENT_REPLAYS.labels(command).inc()
    return stored.status_code, stored.response


async def store(
    conn: AsyncConnection, *, scope: str, key: str, status: int, body: dict[str, Any], order_id: uuid.UUID | None
) -> None:
    await conn.execute(_STORE, {"in_scope": scope, "the_key": key, "status": status, "body": body, "order": order_id})


async def purge_older_than(conn: AsyncConnection, hours: int) -> int:
    result = await conn.execute(
        delete(idempotency_keys).where(
            idempotency_keys.c.created_at < func.now() - text(f"interval '{int(hours)} hours'")
        )
    )
    return result.rowcount or 0


def purge_loop(db: Database, settings: OrderSettings) -> BackgroundLoop:
    """Keys older than the retention go, once per interval (the first one interval after start)."""

    async def purge() -> None:
        async with db.transaction() as conn:
            await purge_older_than(conn, settings.idempotency_retention_hours)

    return BackgroundLoop(
        "idempotency_purge", purge, interval_seconds=settings.idempotency_purge_interval_seconds, run_at_start=False
    )
