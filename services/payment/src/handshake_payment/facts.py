"""The facts this service publishes on payment.events.v1, always through the outbox in the caller's
transaction (the one that changed the state the fact reports)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared.envelope import CloudEvent
from handshake_shared.events import PAYMENT_EVENTS
from handshake_shared.events import payment as pay
from handshake_shared.outbox import Outbox


class Facts:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def emit(self, conn: AsyncConnection, type: str, order_id: str, data: BaseModel, cause: CloudEvent) -> None:
        await self.outbox.emit(conn, topic=PAYMENT_EVENTS, type=type, order_id=order_id, data=data, cause=cause)

    async def attempt_ended(
        self,
        conn: AsyncConnection,
        type: str,
        attempt: Row[Any],
        *,
        intent_id: str | None,
        code: str | None,
        message: str | None,
        cause: CloudEvent,
    ) -> None:
        """payment.failed / payment.canceled / payment.capture_failed for one attempt."""
        order_id = str(attempt.order_id)
        data = pay.PaymentFailed(
            order_id=order_id,
            attempt_id=str(attempt.id),
            payment_intent_id=intent_id,
            failure_code=code,
            failure_message=message,
        )
        await self.emit(conn, type, order_id, data, cause)
