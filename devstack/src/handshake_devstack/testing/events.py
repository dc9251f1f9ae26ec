"""Payload classes for events no service has, on topics a test makes for itself: the outbox, the relay and
the consumer are tested with events the registry never sees, through the same emit every service uses."""

from __future__ import annotations

from functools import cache

from handshake_shared.events.base import Payload


@cache
def payload_on(topic: str, event_type: str = "order.test") -> type[Payload]:
    """The payload class of `event_type` on `topic`; its fields are whatever the test passes (payloads keep
    unknown fields), so `payload_on(topic)(i=3)` is the data `{"i": 3}`."""
    return type("TestPayload", (Payload,), {"event_type": event_type, "event_topic": topic, "__module__": __name__})
