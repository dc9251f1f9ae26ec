"""Ids from event payloads: a UUID, or its string form in payloads written before ids were typed."""

from __future__ import annotations

import uuid


def as_uuid(value: object) -> uuid.UUID:
    """The id as a UUID; ValueError when it is not one (the caller dead-letters the event)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
