"""The event publisher of this service: the facts it announces on payment.events.v1, always through the
outbox in the caller's transaction (the one that changed the state the fact reports)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared.envelope import CloudEvent
from handshake_shared.events import PAYMENT_EVENTS
from handshake_shared.outbox import Outbox


class EventPublisher:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def emit(self, conn: AsyncConnection, type: str, order_id: str, data: BaseModel, cause: CloudEvent) -> None:
        await self.outbox.emit(conn, topic=PAYMENT_EVENTS, type=type, order_id=order_id, data=data, cause=cause)
