"""Payment service tables. Money columns are integer minor units; every table says what it is for."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import UUID

from handshake_shared.db import add_messaging_tables, make_metadata

metadata = make_metadata()
messaging = add_messaging_tables(metadata)

payment_attempts = Table(
    "payment_attempts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("order_id", UUID(as_uuid=True), nullable=False),
    # from order.payment_requested: a redelivered or replayed request finds its attempt instead of a new one
    Column("request_id", Text, nullable=False, unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("state", String(32), nullable=False),
    Column("provider_intent_id", Text, nullable=True, unique=True),
    # lease on PaymentIntent creation: one handler at a time calls the provider for this attempt
    Column("locked_at", DateTime(timezone=True), nullable=True),
    Column("failure_code", Text, nullable=True),
    Column("failure_message", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount >= 0", name="amount_non_negative"),
    comment="One row per payment request of an order: its state and the Stripe PaymentIntent created for it "
    "(at most one). Client secrets are never stored.",
)
Index("ix_payment_attempts_order", payment_attempts.c.order_id, payment_attempts.c.created_at)

attempt_transitions = Table(
    "attempt_transitions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("attempt_id", UUID(as_uuid=True), ForeignKey("payment_attempts.id"), nullable=False),
    Column("from_state", String(32), nullable=True),
    Column("to_state", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    # the Handshake event that caused it and, for provider facts, the Stripe event id (evt_...)
    Column("event_id", Text, nullable=True),
    Column("provider_event_id", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Audit trail: one row per applied attempt transition (from, to, why, causing event, provider event).",
)
Index("ix_attempt_transitions_attempt", attempt_transitions.c.attempt_id, attempt_transitions.c.id)
