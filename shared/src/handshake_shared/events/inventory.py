"""Facts the inventory service publishes on inventory.events.v1."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from handshake_shared.events.base import Line, Payload


class InventoryReserved(Payload):
    order_id: str
    reservation_id: str
    expires_at: datetime
    lines: list[Line]


class RejectedLine(Payload):
    sku: str
    requested: int
    available: int
    reason: str


class InventoryRejected(Payload):
    order_id: str
    lines: list[RejectedLine]


class InventoryCommitted(Payload):
    order_id: str
    reservation_id: str
    rereserved: bool = Field(default=False, description="stock was reserved again after the hold had lapsed")


class InventoryCommitFailed(Payload):
    """A paid (or authorized) order whose stock can no longer be held: the money must go back."""

    order_id: str
    reason: str
    lines: list[RejectedLine] = []


class InventoryRestocked(Payload):
    order_id: str
    reason: str
    lines: list[Line]


class InventoryReleased(Payload):
    order_id: str
    reservation_id: str
    reason: str
