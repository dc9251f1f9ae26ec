"""How an HTTP command changes an order: in one transaction, the Idempotency-Key claim (a retry is answered
from the stored response), the order's row lock, the saga's decision, its rows and events, and the stored
answer (see idempotency.py)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order import idempotency as idem
from handshake_order import repository as repo
from handshake_order.domain import saga
from handshake_shared.db import Database
from handshake_shared.http import Problem
from handshake_shared.outbox import Outbox

Decide = Callable[[saga.OrderView], saga.Decision]
Respond = Callable[[AsyncConnection, saga.Decision], Awaitable[dict[str, Any]]]
Work = Callable[[AsyncConnection], Awaitable[dict[str, Any]]]


def order_not_found() -> Problem:
    return Problem(404, "Order not found", type="order-not-found")


def order_id_or_404(order_id: str) -> uuid.UUID:
    oid = repo.parse_order_id(order_id)
    if oid is None:
        raise order_not_found()
    return oid


def refused_problem(refused: saga.CommandRefused, state: str) -> Problem:
    return Problem(refused.status, "Not possible in this state", refused.detail, type=refused.code, state=state)


async def locked_order(conn: AsyncConnection, oid: uuid.UUID) -> Any:
    row = await repo.lock_order(conn, oid)
    if row is None:
        raise order_not_found()
    return row


def _replayed(stored: tuple[int, Any]) -> idem.CanonicalJSONResponse:
    return idem.CanonicalJSONResponse(stored[1], status_code=stored[0], headers={"Idempotent-Replayed": "true"})


class OrderCommands:
    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox

    async def run(
        self,
        order_id: uuid.UUID,
        decide: Decide,
        *,
        actor: str,
        scope: str | None = None,
        key: str | None = None,
        request: BaseModel | dict[str, Any] | None = None,
        command_name: str = "",
        status: int = 200,
        respond: Respond | None = None,
    ) -> idem.CanonicalJSONResponse:
        """Lock the order, let the saga decide, apply; with a key, answer a retry from the stored response."""
        async with self.db.transaction() as conn:
            if key is not None:
                assert scope is not None and request is not None
                stored = await idem.claim(
                    conn,
                    scope=scope,
                    key=key,
                    request_hash=idem.fingerprint(command_name, request),
                    command=command_name,
                )
                if stored is not None:
                    return _replayed(stored)
            row = await locked_order(conn, order_id)
            try:
                decision = decide(repo.view_of(row))
            except saga.CommandRefused as refused:
                title = "Too many payment attempts" if refused.status == 429 else "Not possible in this state"
                raise Problem(refused.status, title, refused.detail, type=refused.code, state=row.state) from None
            body = {"order_id": str(order_id), "state": decision.view.state.value}
            if respond is not None:
                body.update(await respond(conn, decision))
            await repo.apply(conn, self.outbox, decision, actor=actor)
            if key is not None:
                assert scope is not None
                await idem.store(conn, scope=scope, key=key, status=status, body=body, order_id=order_id)
        return idem.CanonicalJSONResponse(body, status_code=status)

    async def keyed(
        self,
        *,
        scope: str,
        key: str,
        request: BaseModel | dict[str, Any],
        command_name: str,
        status: int,
        work: Work,
    ) -> idem.CanonicalJSONResponse:
        """A staff action that is not one saga decision, done once per Idempotency-Key: the claim, the work and
        the stored answer in one transaction."""
        async with self.db.transaction() as conn:
            stored = await idem.claim(
                conn, scope=scope, key=key, request_hash=idem.fingerprint(command_name, request), command=command_name
            )
            if stored is not None:
                return _replayed(stored)
            body = await work(conn)
            await idem.store(
                conn,
                scope=scope,
                key=key,
                status=status,
                body=body,
                order_id=uuid.UUID(body["order_id"]) if body.get("order_id") else None,
            )
        return idem.CanonicalJSONResponse(body, status_code=status)
