"""Idempotency-Key for staff actions that span several transactions (a reconciliation run calls the provider
between its start and its end, so no one transaction can hold the whole action).

The key is claimed in the transaction that records the action's start and answered in the one that records its
end. A repeat after the end gets the first answer back; a repeat while it is still going on (a double click, a
browser retry) waits on the key's unique index for the start to commit, then is told it is in progress; the
same key with another request is refused. A start whose process died leaves its key claimed and its run
unfinished: the key keeps answering that, and a new request (a new key) runs again."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import metrics
from handshake_payment.db import idempotency_keys
from handshake_payment.settings import PaymentSettings
from handshake_shared.http import Problem
from handshake_shared.retention import RetentionJob, purge


class KeyTaken(Exception):
    """The key was claimed before; the caller answers from the stored row instead of acting."""


def fingerprint(command: str, request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"command": command, "request": request}, sort_keys=True).encode()).hexdigest()


async def claim(conn: AsyncConnection, *, scope: str, key: str, request_hash: str, run_id: Any) -> None:
    """Claim the key for the run being started in this transaction; KeyTaken (which rolls the start back) when
    it was claimed before. Waits while a concurrent claim of the same key is not yet committed."""
    claimed = (
        await conn.execute(
            pg_insert(idempotency_keys)
            .values(scope=scope, key=key, request_hash=request_hash, run_id=run_id)
            .on_conflict_do_nothing()
            .returning(idempotency_keys.c.key)
        )
    ).first()
    if claimed is None:
        raise KeyTaken


async def answer(conn: AsyncConnection, *, scope: str, key: str, status: int, body: dict[str, Any]) -> None:
    await conn.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)
        .values(status_code=status, response=body)
    )


async def stored_answer(
    conn: AsyncConnection, *, scope: str, key: str, request_hash: str, command: str
) -> tuple[int, dict[str, Any]]:
    """The first answer for a key found taken, or the problem that says why there is none to give."""
    row = (
        await conn.execute(
            select(idempotency_keys).where(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)
        )
    ).one()
    if row.request_hash != request_hash:
        raise Problem(
            422,
            "Idempotency-Key reused",
            "this Idempotency-Key was already used with a different request",
            type="idempotency-key-reused",
        )
    if row.response is None:
        raise Problem(
            409,
            "Request in progress",
            "the first request with this Idempotency-Key has not finished yet",
            type="idempotency-key-in-progress",
            run_id=str(row.run_id) if row.run_id else None,
            retry_after_seconds=2,
        )
    metrics.IDEMPOTENT_REPLAYS.labels(command).inc()
    return row.status_code, row.response


def retention(settings: PaymentSettings) -> RetentionJob | None:
    """A key answers its run: it goes when runs of its age go (a browser retry comes within minutes)."""
    return purge(
        "idempotency_keys",
        idempotency_keys,
        age_column=idempotency_keys.c.created_at,
        keep=timedelta(days=settings.reconciliation_retention_days),
    )
