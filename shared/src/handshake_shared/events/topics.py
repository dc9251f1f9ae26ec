"""Kafka topic names. Versioned: a breaking change is a new topic, never an edit."""

ORDER_EVENTS = "order.events.v1"
INVENTORY_EVENTS = "inventory.events.v1"
PAYMENT_EVENTS = "payment.events.v1"
PROVIDER_EVENTS = "provider.events.v1"

SAGA_TOPICS = (ORDER_EVENTS, INVENTORY_EVENTS, PAYMENT_EVENTS, PROVIDER_EVENTS)


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


ALL_TOPICS = SAGA_TOPICS + tuple(dlq_topic(t) for t in SAGA_TOPICS)
