from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    """Base of every event payload: frozen, and unknown fields are kept for forward compatibility.

    A concrete payload class belongs to exactly one event type and carries it as `event_type`, so the
    type of an event and the shape of its data cannot disagree; the registry is built from these classes."""

    model_config = ConfigDict(frozen=True, extra="allow")

    event_type: ClassVar[str] = ""  # empty on parts of payloads and on bases shared by several types


class Line(Payload):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)
