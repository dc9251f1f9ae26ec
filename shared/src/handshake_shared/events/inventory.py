"""Facts the inventory service publishes on inventory.events.v1."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from handshake_shared.events.base import Line, Payload


class InventoryReserved(Payload):
    """Every line of the order is held until `expires_at`."""

    event_type = "inventory.reserved"
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
    """Not every line could be reserved; nothing is held."""

    event_type = "inventory.rejected"
    order_id: str
    lines: list[RejectedLine]


class InventoryCommitted(Payload):
    """The reserved units are sold."""

    event_type = "inventory.committed"
    order_id: str
    reservation_id: str
    rereserved: bool = Field(default=False, description="stock was reserved again after the hold had lapsed")


class InventoryCommitFailed(Payload):
    """A paid (or authorized) order whose stock can no longer be held: the money must go back."""

    event_type = "inventory.commit_failed"
    order_id: str
    reason: str
    lines: list[RejectedLine] = []


class InventoryRestocked(Payload):
    """Sold units are back on the shelf (a refund with restock, a cancel after the commit)."""

    event_type = "inventory.restocked"
    order_id: str
    reason: str
    lines: list[Line]


class InventoryReleased(Payload):
    """The reservation is released; the units are available again."""

    event_type = "inventory.released"
    order_id: str
    reservation_id: str
    reason: str


class InventoryReservationExpired(InventoryReleased):
    """The reservation lapsed before the order was paid; the units are available again."""

    event_type = "inventory.reservation_expired"
