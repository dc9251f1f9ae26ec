"""The event publisher of this service: the facts it announces on payment.events.v1, always through the
outbox in the caller's transaction (the one that changed the state the fact reports)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared.envelope import CloudEvent
from handshake_shared.events.base import Payload
from handshake_shared.outbox import Outbox


class EventPublisher:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def emit(self, conn: AsyncConnection, data: Payload, order_id: uuid.UUID, cause: CloudEvent) -> None:
        # the payload's class names the type and the topic, so they cannot disagree with its fields
        await self.outbox.emit(conn, data, order_id=order_id, cause=cause)
