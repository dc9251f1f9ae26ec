from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    """Base of every event payload: frozen, and unknown fields are kept for forward compatibility."""

    model_config = ConfigDict(frozen=True, extra="allow")


class Line(Payload):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)
