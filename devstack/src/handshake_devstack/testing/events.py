"""What the outbox, the relay and the consumer are tested with: payload classes for events no service has,
on topics a test makes for itself (events the registry never sees, through the same emit every service
uses), and a relay send over a producer the test holds."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from aiokafka import AIOKafkaProducer

from handshake_shared.events.base import Payload
from handshake_shared.outbox import SendFn


@cache
def payload_on(topic: str, event_type: str = "order.test") -> type[Payload]:
    """The payload class of `event_type` on `topic`; its fields are whatever the test passes (payloads keep
    unknown fields), so `payload_on(topic)(i=3)` is the data `{"i": 3}`."""
    return type("TestPayload", (Payload,), {"event_type": event_type, "event_topic": topic, "__module__": __name__})


def producer_send(producer: AIOKafkaProducer) -> SendFn:
    """The relay's `send` over a plain producer a test holds (and can stop, or wrap to hold an answer back):
    the send is handed to the producer, and the future it returns is the broker's answer."""

    async def send(topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> asyncio.Future[Any]:
        return await producer.send(topic, value=value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])

    return send
