from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

# An id that is a UUID. On the wire it stays what it always was, a lowercase hyphenated string, and its
# published JSON Schema stays a plain string (a `format` would count as a new constraint for subscribers,
# events/compat.py). A value that is not a UUID fails validation, so the consumer dead-letters the event
# before any handler runs, instead of every service parsing ids by hand.
Id = Annotated[UUID, WithJsonSchema({"type": "string"})]


class Payload(BaseModel):
    """Base of every event payload: frozen, and unknown fields are kept for forward compatibility.

    A concrete payload class belongs to exactly one event type and carries it as `event_type`, with the topic
    it is published on as `event_topic`, so the type of an event, its topic and the shape of its data cannot
    disagree: the outbox takes both from the class, and the registry and handler maps are built from it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    # empty on parts of payloads and on bases shared by several types
    event_type: ClassVar[str] = ""
    event_topic: ClassVar[str] = ""


class Line(Payload):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)
