"""Webhook-ingest tables: provider events exactly as received, plus the messaging tables."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
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
    # the Stripe-Signature header that came with it: raw_body and this header are the proof payment checks
    # before it applies the event; null for events the gap scan fetched (nothing signed them)
    Column("signature_header", Text, nullable=True),
    # the verified body parsed, with client secrets removed
    Column("payload", JSONB, nullable=False),
    Column("delivery_count", Integer, nullable=False, server_default=text("1")),
    Column("first_received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # id of the provider.stripe.event written to the outbox with the first delivery
    Column("forwarded_event_id", UUID(as_uuid=True), nullable=True),
    # how we learned of it: a signed webhook delivery, or the gap scan listing the provider's events
    Column("source", Text, nullable=False, server_default=text("'webhook'")),
    # when raw_body and payload were reduced to what reconciliation and disputes need (no client secret, no
    # billing details) and signature_header dropped with them; null while the event is still whole
    Column("scrubbed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("delivery_count >= 1", name="delivery_count_positive"),
    CheckConstraint("source IN ('webhook', 'gap_scan')", name="source_known"),
    comment=(
        "Every verified provider webhook event, one row per provider event id however often it is delivered; "
        "the first delivery is forwarded to provider.events.v1 in the same transaction."
    ),
)
Index("ix_provider_events_order_id", provider_events.c.order_id)
Index("ix_provider_events_object_id", provider_events.c.object_id)
Index("ix_provider_events_payment_intent_id", provider_events.c.payment_intent_id)
# the scrub job's queue: the still-whole events, oldest first
Index(
    "ix_provider_events_unscrubbed",
    provider_events.c.first_received_at,
    postgresql_where=provider_events.c.scrubbed_at.is_(None),
)

provider_event_replays = Table(
    "provider_event_replays",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "provider_event_id",
        Text,
        ForeignKey("provider_events.provider_event_id", ondelete="RESTRICT"),
        nullable=False,
    ),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("replayed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # the new provider.stripe.event written to the outbox by this replay
    Column("forwarded_event_id", UUID(as_uuid=True), nullable=False),
    # the Idempotency-Key the staff member sent: a double click or a browser retry answers this replay again
    # instead of forwarding the event twice; null on replays recorded before keys were asked for
    Column("idempotency_key", Text, nullable=True),
    CheckConstraint("length(reason) >= 3", name="reason_given"),
    comment="Audit of support/admin replays: each re-forwards a stored provider event as a new CloudEvent.",
)
Index("ix_provider_event_replays_provider_event_id", provider_event_replays.c.provider_event_id)
# a key is the staff member's own: two people's keys never collide, and one person's key replays once
Index(
    "ux_provider_event_replays_actor_idempotency_key",
    provider_event_replays.c.actor,
    provider_event_replays.c.idempotency_key,
    unique=True,
)

provider_event_cursor = Table(
    "provider_event_cursor",
    metadata,
    Column("provider", Text, primary_key=True),
    # the largest provider `created` (epoch seconds) seen by a completed gap scan
    Column("last_created", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Where the next gap scan starts listing the provider's events.",
)

gap_scans = Table(
    "provider_event_gap_scans",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("provider", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # the `created` lower bound the scan listed from, and the cursor it left behind
    Column("listed_from", BigInteger, nullable=False),
    Column("cursor_after", BigInteger, nullable=True),
    Column("listed", Integer, nullable=False, server_default=text("0")),
    Column("ingested", Integer, nullable=False, server_default=text("0")),
    Column("error", Text, nullable=True),
    comment="One row per gap scan: events listed at the provider and how many were missing (ingested).",
)
