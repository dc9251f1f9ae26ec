"""Webhook-ingest tables: provider events exactly as received, plus the messaging tables."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from handshake_shared.db import add_messaging_tables, make_metadata

metadata = make_metadata()
messaging = add_messaging_tables(metadata)

provider_events = Table(
    "provider_events",
    metadata,
    Column("provider_event_id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("api_version", Text, nullable=True),
    Column("livemode", Boolean, nullable=False),
    # the provider's own clock, epoch seconds: the order in which the provider says things happened
    Column("created", BigInteger, nullable=False),
    Column("object_type", Text, nullable=True),
    Column("object_id", Text, nullable=True),
    # the PaymentIntent the event is about (the object itself, or e.g. a charge's payment_intent)
    Column("payment_intent_id", Text, nullable=True),
    # from the object's metadata, as set by the payment service; text because it is the provider's data
    Column("order_id", Text, nullable=True),
    Column("attempt_id", Text, nullable=True),
    # the exact bytes that were signed, for audit and re-verification; never served by the API
    Column("raw_body", LargeBinary, nullable=False),
    # the verified body parsed, with client secrets removed
    Column("payload", JSONB, nullable=False),
    Column("delivery_count", Integer, nullable=False, server_default=text("1")),
    Column("first_received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # id of the provider.stripe.event written to the outbox with the first delivery
    Column("forwarded_event_id", UUID(as_uuid=True), nullable=True),
    CheckConstraint("delivery_count >= 1", name="delivery_count_positive"),
    comment=(
        "Every verified provider webhook event, one row per provider event id however often it is delivered; "
        "the first delivery is forwarded to provider.events.v1 in the same transaction."
    ),
)
Index("ix_provider_events_order_id", provider_events.c.order_id)
Index("ix_provider_events_object_id", provider_events.c.object_id)
Index("ix_provider_events_payment_intent_id", provider_events.c.payment_intent_id)
