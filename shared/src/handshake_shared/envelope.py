"""CloudEvents 1.0 envelope, JSON structured mode, one event per Kafka message.

Structured mode as the CloudEvents Kafka protocol binding defines it: every attribute and extension is in
the JSON body and the only CloudEvents header is `content-type: application/cloudevents+json`. No `ce_`
header is ever set: a `ce_` header tells the binding's readers (the CloudEvents SDKs' auto-detection)
that the message is in binary mode, and they would then look for every attribute in headers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

CONTENT_TYPE = "application/cloudevents+json"
# The sequence extension (CloudEvents extensions/sequence.md) is a String compared lexicographically:
# zero-padded to 20 digits, which holds any 64-bit counter, lexicographic order is numeric order.
SEQUENCE_DIGITS = 20


def _sequence_on_the_wire(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update(
        type="string",
        pattern=f"^[0-9]{{{SEQUENCE_DIGITS}}}$",
        description="per order, strictly increasing per producing service: the event's number, zero-padded to "
        f"{SEQUENCE_DIGITS} digits (the CloudEvents sequence extension compares strings lexicographically)",
    )


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
    sequence: int = Field(
        ge=1,
        lt=10**SEQUENCE_DIGITS,
        description="per order, strictly increasing per producing service",
        json_schema_extra=_sequence_on_the_wire,
    )
    traceparent: str | None = None

    @field_validator("sequence", mode="before")
    @classmethod
    def _sequence_from_wire(cls, value: object) -> object:
        # the string form, and the bare integer events carried before it (still in topics during a rollout)
        if isinstance(value, str):
            if not value.isascii() or not value.isdigit() or len(value) > SEQUENCE_DIGITS:
                raise ValueError(f"sequence must be a string of at most {SEQUENCE_DIGITS} digits")
            return int(value)
        if isinstance(value, bool):
            raise ValueError("sequence is not a boolean")
        return value

    @field_serializer("sequence", when_used="json")
    def _sequence_to_wire(self, value: int) -> str:
        return str(value).zfill(SEQUENCE_DIGITS)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    def kafka_headers(self) -> dict[str, str]:
        """The Kafka headers of the message that carries this event: structured mode, so the event format's
        media type and nothing else of CloudEvents. `traceparent` is W3C trace context for tracing tools
        that read Kafka headers; it repeats the distributed-tracing extension that is in the body."""
        headers = {"content-type": CONTENT_TYPE}
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
