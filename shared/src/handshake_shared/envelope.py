"""CloudEvents 1.0 envelope, JSON structured mode, one event per Kafka message."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CONTENT_TYPE = "application/cloudevents+json"


class EnvelopeError(ValueError):
    """The bytes are not a valid Handshake CloudEvent."""


class CloudEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID
    source: str = Field(pattern=r"^/handshake/[a-z-]+$")
    type: str = Field(min_length=3)
    subject: str = Field(min_length=1, description="the order id")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]
    correlationid: str = Field(min_length=1, description="the order id")
    causationid: str | None = Field(default=None, description="id of the event that caused this one")
    sequence: int = Field(ge=1, description="per order, strictly increasing per producing service")
    traceparent: str | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    def kafka_headers(self) -> dict[str, str]:
        headers = {"content-type": CONTENT_TYPE, "ce_type": self.type, "ce_id": str(self.id)}
        if self.traceparent:
            headers["traceparent"] = self.traceparent
        return headers


def parse_event(raw: bytes | str) -> CloudEvent:
    try:
        return CloudEvent.model_validate_json(raw)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise EnvelopeError(str(exc)) from exc


def build_event(
    *,
    service: str,
    type: str,
    order_id: str,
    data: BaseModel | dict[str, Any],
    sequence: int,
    causation_id: str | None = None,
    traceparent: str | None = None,
    event_id: uuid.UUID | None = None,
) -> CloudEvent:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else json.loads(json.dumps(data))
    return CloudEvent(
        id=event_id or uuid.uuid4(),
        source=f"/handshake/{service}",
        type=type,
        subject=order_id,
        time=datetime.now(UTC),
        data=payload,
        correlationid=order_id,
        causationid=causation_id,
        sequence=sequence,
        traceparent=traceparent,
    )
