"""Payment service tables. Money columns are integer minor units; every table says what it is for."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Table,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

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
    # what the provider took (a partial capture takes less than amount); refunds are checked against it
    Column("amount_captured", BigInteger, nullable=True),
    # how many times a handler called the provider to create this attempt's PaymentIntent: from the second
    # on, a lost answer may have left one behind, so it is looked for (metadata.attempt_id) before creating
    Column("intent_create_calls", Integer, nullable=False, server_default=text("0")),
    # what the provider reported when it held a different amount or currency than asked (never fulfilled)
    Column("provider_mismatch", JSONB, nullable=True),
    # set when this attempt was paid or authorized after another attempt of the order already held the
    # payment: its money is given back automatically and it never counts as the order's payment
    Column("duplicate_of", UUID(as_uuid=True), ForeignKey("payment_attempts.id"), nullable=True),
    # where intent creation stands (phases.py): recorded -> intent_stored -> finished (announced, failed,
    # or cancelled with nothing left open at the provider); reconciliation finishes what is not finished.
    # A row written without it starts at the beginning: every phase checks the row again before acting
    Column("recovery_point", String(16), nullable=False, server_default="recorded"),
    # The operations asked of the attempt later, each with its own recovery point (domain/recovery.py), NULL
    # until asked; each column is written by its operation in the transaction that commits each phase.
    # A capture the order asked for (requested -> settled_at_provider -> finished) and the amount it asked
    Column("capture_point", String(24), nullable=True),
    Column("capture_amount", BigInteger, nullable=True),
    # closing the attempt's intent once its order closed (requested -> closed_at_provider -> finished), and why
    # the order closed (order_cancelled / order_expired, with the order's reason): the attempt ends with them
    Column("cancel_point", String(24), nullable=True),
    Column("cancel_code", Text, nullable=True),
    Column("cancel_reason", Text, nullable=True),
    # giving a duplicate's money back (marked_duplicate -> given_back -> finished): set on exactly the duplicates
    Column("give_back_point", String(24), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount >= 0", name="amount_non_negative"),
    CheckConstraint("recovery_point IN ('recorded', 'intent_stored', 'finished')", name="recovery_point_known"),
    CheckConstraint("capture_point IN ('requested', 'settled_at_provider', 'finished')", name="capture_point_known"),
    CheckConstraint(
        "capture_point IS NULL OR capture_point = 'finished' OR capture_amount > 0", name="open_capture_has_amount"
    ),
    CheckConstraint("cancel_point IN ('requested', 'closed_at_provider', 'finished')", name="cancel_point_known"),
    CheckConstraint(
        "cancel_point IS NULL OR cancel_point = 'finished' OR cancel_code IS NOT NULL", name="open_cancel_says_why"
    ),
    CheckConstraint("give_back_point IN ('marked_duplicate', 'given_back', 'finished')", name="give_back_point_known"),
    CheckConstraint("(give_back_point IS NULL) = (duplicate_of IS NULL)", name="give_back_exactly_for_duplicates"),
    comment="One row per payment request of an order: its state and the Stripe PaymentIntent created for it "
    "(at most one). Client secrets are never stored.",
)
Index("ix_payment_attempts_order", payment_attempts.c.order_id, payment_attempts.c.created_at)
Index(
    "ix_payment_attempts_unfinished",
    payment_attempts.c.updated_at,
    postgresql_where=text("recovery_point <> 'finished'"),
)
# the rows reconciliation looks at for a capture, cancel or give-back left half-way (one index: a query on any
# one of the three columns is answered from it)
Index(
    "ix_payment_attempts_operations_unfinished",
    payment_attempts.c.updated_at,
    postgresql_where=text("capture_point <> 'finished' OR cancel_point <> 'finished' OR give_back_point <> 'finished'"),
)
# at most one attempt per order holds its money (authorized or captured); any other is a marked duplicate
Index(
    "uq_payment_attempts_one_payment_per_order",
    payment_attempts.c.order_id,
    unique=True,
    postgresql_where=text("state IN ('authorized', 'succeeded') AND duplicate_of IS NULL"),
)

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

refunds = Table(
    "refunds",
    metadata,
    # the order's refund_id (order.refund_requested), or one derived from the attempt for an automatic refund
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("order_id", UUID(as_uuid=True), nullable=False),
    # the captured attempt refunded; null only for a request refused because nothing was captured
    Column("attempt_id", UUID(as_uuid=True), ForeignKey("payment_attempts.id"), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=False),
    Column("automatic", Boolean, nullable=False, server_default=false()),
    Column("requested_by", Text, nullable=True),
    Column("state", String(16), nullable=False),
    Column("provider_refund_id", Text, nullable=True, unique=True),
    # lease on the provider call: one handler at a time looks the refund up at Stripe and creates it
    Column("locked_at", DateTime(timezone=True), nullable=True),
    Column("failure_code", Text, nullable=True),
    Column("failure_message", Text, nullable=True),
    # where the refund's phases stand (phases.py): recorded -> provider_refunded -> finished (its outcome
    # recorded and announced); reconciliation finishes what is not finished
    Column("recovery_point", String(24), nullable=False, server_default="recorded"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("state IN ('requested', 'succeeded', 'failed', 'reversed')", name="state_known"),
    CheckConstraint("recovery_point IN ('recorded', 'provider_refunded', 'finished')", name="recovery_point_known"),
    comment="One row per refund of a captured attempt (asked by the order, or automatic for a second capture) "
    "and the Stripe refund that carried it out. Requested and succeeded rows never sum above the capture.",
)
Index("ix_refunds_attempt", refunds.c.attempt_id)
Index("ix_refunds_order", refunds.c.order_id, refunds.c.created_at)
Index("ix_refunds_unfinished", refunds.c.updated_at, postgresql_where=text("recovery_point <> 'finished'"))

refund_transitions = Table(
    "refund_transitions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("refund_id", UUID(as_uuid=True), ForeignKey("refunds.id"), nullable=False),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("event_id", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Audit trail: one row per refund state change (from, to, why, causing event).",
)
Index("ix_refund_transitions_refund", refund_transitions.c.refund_id, refund_transitions.c.id)

reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("trigger", String(16), nullable=False),
    # who asked for a manual run (token subject); null for scheduled runs
    Column("requested_by", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("checked", Integer, nullable=False, server_default=text("0")),
    Column("repaired", Integer, nullable=False, server_default=text("0")),
    Column("flagged", Integer, nullable=False, server_default=text("0")),
    Column("errors", Integer, nullable=False, server_default=text("0")),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # set for a run staff asked for about one order (trigger manual-order); null for a run over everything due
    Column("order_id", UUID(as_uuid=True), nullable=True),
    CheckConstraint("trigger IN ('scheduled', 'manual', 'manual-order')", name="trigger_known"),
    comment="One row per reconciliation run (scheduled, or asked by staff for everything due or for one order): "
    "what it looked at at the provider, what it repaired, what it flagged for review, and what it could not check.",
)
Index("ix_reconciliation_runs_started", reconciliation_runs.c.started_at)
Index("ix_reconciliation_runs_order", reconciliation_runs.c.order_id, postgresql_where=text("order_id IS NOT NULL"))
# "which runs touched this order": each repaired, flagged or failed item of a run's detail names its order
Index(
    "ix_reconciliation_runs_detail",
    reconciliation_runs.c.detail,
    postgresql_using="gin",
    postgresql_ops={"detail": "jsonb_path_ops"},
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    # the run the key started, claimed in the transaction that records the run's start
    Column("run_id", UUID(as_uuid=True), nullable=True),
    # the first answer, stored in the transaction that records the run's end; null while the run is going on
    Column("status_code", Integer, nullable=True),
    Column("response", JSONB, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Staff actions by (scope, Idempotency-Key): a repeated request (double click, browser retry) gets the "
    "first answer back instead of acting again.",
)
Index("ix_idempotency_keys_created", idempotency_keys.c.created_at)

parked_provider_events = Table(
    "parked_provider_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("provider_event_id", Text, nullable=False, unique=True),
    Column("payment_intent_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    # the provider's `created` (epoch seconds): parked events of one intent are applied in this order
    Column("provider_created", BigInteger, nullable=False),
    # the whole provider.stripe.event envelope as it arrived: applied later through the live webhook path
    Column("payload", JSONB, nullable=False),
    Column("parked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # set in the transaction that applied it: a parked event is applied at most once
    Column("applied_at", DateTime(timezone=True), nullable=True),
    comment="Provider events about a PaymentIntent no attempt knows yet (it arrived before the intent id was "
    "stored): kept and applied once an attempt stores or adopts that intent, in the provider's order.",
)
Index(
    "ix_parked_provider_events_intent",
    parked_provider_events.c.payment_intent_id,
    parked_provider_events.c.provider_created,
)

provider_disputes = Table(
    "provider_disputes",
    metadata,
    # the provider's dispute id: charge.dispute.created is announced once per dispute, however often it comes
    Column("dispute_id", Text, primary_key=True),
    Column("attempt_id", UUID(as_uuid=True), ForeignKey("payment_attempts.id"), nullable=False),
    Column("payment_intent_id", Text, nullable=False),
    Column("provider_event_id", Text, nullable=True),
    Column("announced_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="One row per provider dispute announced as payment.disputed (written with the outbox row): a "
    "replayed or redelivered dispute event announces nothing again.",
)
Index("ix_provider_disputes_attempt", provider_disputes.c.attempt_id)
