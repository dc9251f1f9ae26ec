"""Facts the inventory service publishes on inventory.events.v1."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from handshake_shared.events.base import Id, Line, Payload
from handshake_shared.events.topics import INVENTORY_EVENTS


class InventoryEvent(Payload):
    """Base of every inventory.* payload."""

    event_topic = INVENTORY_EVENTS
    order_id: Id


class InventoryReserved(InventoryEvent):
    """Every line of the order is held until `expires_at`."""

    event_type = "inventory.reserved"
    reservation_id: Id
    expires_at: datetime
    lines: list[Line]


class RejectedLine(Payload):
    sku: str
    requested: int
    available: int
    reason: str


class InventoryRejected(InventoryEvent):
    """Not every line could be reserved; nothing is held."""

    event_type = "inventory.rejected"
    lines: list[RejectedLine]


class InventoryCommitted(InventoryEvent):
    """The reserved units are sold."""

    event_type = "inventory.committed"
    reservation_id: Id
    rereserved: bool = Field(default=False, description="stock was reserved again after the hold had lapsed")


class InventoryCommitFailed(InventoryEvent):
    """A paid (or authorized) order whose stock can no longer be held: the money must go back."""

    event_type = "inventory.commit_failed"
    reason: str
    lines: list[RejectedLine] = []


class InventoryRestocked(InventoryEvent):
    """Sold units are back on the shelf (a refund with restock, a cancel after the commit)."""

    event_type = "inventory.restocked"
    reason: str
    lines: list[Line]


class InventoryReservationEnded(InventoryEvent):
    """The fields of inventory.released and inventory.reservation_expired: the reservation no longer holds its
    units. No event type of its own: an expiry is not a release, and each has its own class."""

    reservation_id: Id
    reason: str


class InventoryReleased(InventoryReservationEnded):
    """The reservation is released; the units are available again."""

    event_type = "inventory.released"


class InventoryReservationExpired(InventoryReservationEnded):
    """The reservation lapsed before the order was paid; the units are available again."""

    event_type = "inventory.reservation_expired"
