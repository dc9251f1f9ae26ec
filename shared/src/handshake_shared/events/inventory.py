"""Facts the inventory service publishes on inventory.events.v1."""

from __future__ import annotations

from datetime import datetime

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


class InventoryReleased(Payload):
    order_id: str
    reservation_id: str
    reason: str
