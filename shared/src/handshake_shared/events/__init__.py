"""Event payloads: the public contract. One frozen pydantic model per event type."""

from handshake_shared.events.registry import EVENT_MODELS, TOPIC_OF, payload_model  # noqa: F401
from handshake_shared.events.topics import (  # noqa: F401
    ALL_TOPICS,
    INVENTORY_EVENTS,
    ORDER_EVENTS,
    PAYMENT_EVENTS,
    PROVIDER_EVENTS,
    dlq_topic,
)
