"""Order service tables. Money columns are integer minor units; every table says what it is for."""

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
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from handshake_shared.db import add_messaging_tables, make_metadata

metadata = make_metadata()
messaging = add_messaging_tables(metadata)

products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    CheckConstraint("unit_price >= 0", name="unit_price_non_negative"),
    comment="The catalogue: the only source of prices. Clients never send a price.",
)

coupons = Table(
    "coupons",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("percent_bp", Integer, nullable=True),
    Column("amount_off", BigInteger, nullable=True),
    Column("currency", String(3), nullable=True),
    Column("max_redemptions", Integer, nullable=True),
    Column("redemptions", Integer, nullable=False, server_default=text("0")),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("once_per_customer", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint("kind IN ('percent', 'fixed')", name="kind_known"),
    CheckConstraint("max_redemptions IS NULL OR redemptions <= max_redemptions", name="redemptions_within_limit"),
    CheckConstraint("percent_bp IS NULL OR (percent_bp > 0 AND percent_bp <= 10000)", name="percent_range"),
    CheckConstraint("amount_off IS NULL OR amount_off > 0", name="amount_off_positive"),
    comment="Discount codes: percent (basis points) or fixed amount in one currency.",
)

tax_rates = Table(
    "tax_rates",
    metadata,
    Column("region", String(16), primary_key=True),
    Column("rate_bp", Integer, nullable=False),
    CheckConstraint("rate_bp >= 0 AND rate_bp <= 10000", name="rate_range"),
    comment="Tax rate per region in basis points, applied to the discounted subtotal.",
)

shipping_rates = Table(
    "shipping_rates",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    comment="Flat shipping price per shipping method.",
)

orders = Table(
    "orders",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("customer_id", Text, nullable=True),
    Column("lookup_token_hash", String(64), nullable=True),
    Column("state", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("snapshot", JSONB, nullable=False),
    Column("reservation_id", Text, nullable=True),
    Column("payment_attempt_id", Text, nullable=True),
    Column("payment_intent_id", Text, nullable=True),
    Column("payment_requested", Boolean, nullable=False, server_default=text("false")),
    # payment requests made for this order (the first and every retry): capped against card testing
    Column("payment_attempts", Integer, nullable=False, server_default=text("0")),
    Column("captured_amount", BigInteger, nullable=False, server_default=text("0")),
    Column("stock_committed", Boolean, nullable=False, server_default=text("false")),
    Column("refunded_amount", BigInteger, nullable=False, server_default=text("0")),
    Column("refund_pending_amount", BigInteger, nullable=False, server_default=text("0")),
    # Held stock (domain/holds.py): who holds it (customer:<id>, or guest-address:<keyed hash of the client
    # address>), how many units, and the guest's short hold until the payment session is opened
    Column("holder", Text, nullable=True),
    Column("units", Integer, nullable=False, server_default=text("0")),
    Column("hold_seconds", Integer, nullable=True),
    Column("payment_session_opened", Boolean, nullable=False, server_default=text("false")),
    # Raised by one in the same UPDATE as every other change of the row (repository.apply), so two reads
    # with the same version saw the same order. Not derived from updated_at: now() is the transaction's start
    # time, so two changes can carry the same or even an earlier timestamp than the one before them.
    Column("version", BigInteger, nullable=False, server_default=text("1")),
    # what the customer gave to be reached at (lowercased, so staff find it however it was typed): personal data
    Column("contact_email", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("total >= 0", name="total_non_negative"),
    # the database itself refuses to promise back more than was taken
    CheckConstraint(
        "refunded_amount >= 0 AND refund_pending_amount >= 0 AND refunded_amount + refund_pending_amount <= captured_amount",
        name="refunds_within_capture",
    ),
    comment="One row per order: lifecycle state plus the immutable price snapshot taken at checkout.",
)
Index("ix_orders_customer", orders.c.customer_id, orders.c.created_at)
Index("ix_orders_state_updated", orders.c.state, orders.c.updated_at)
# staff search (search.py) pages newest first by (created_at, id); a reference is a range of ids (the primary key)
Index("ix_orders_created", orders.c.created_at, orders.c.id)
Index(
    "ix_orders_contact_email",
    orders.c.contact_email,
    orders.c.created_at,
    postgresql_where=orders.c.contact_email.isnot(None),
)
Index("ix_orders_payment_intent", orders.c.payment_intent_id, postgresql_where=orders.c.payment_intent_id.isnot(None))
# one order's events in the order they were written (GET /v1/admin/orders/{id}/events, the resend)
Index("ix_outbox_message_key", messaging.outbox.c.message_key, messaging.outbox.c.id)
# the checkout's held-units check reads only a holder's unpaid orders
Index(
    "ix_orders_holder_holding",
    orders.c.holder,
    postgresql_where=text("state IN ('draft', 'payment_pending', 'payment_failed')"),
)

order_transitions = Table(
    "order_transitions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("order_id", UUID(as_uuid=True), ForeignKey("orders.id"), nullable=False),
    Column("from_state", String(32), nullable=True),
    Column("to_state", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("event_id", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Audit trail: one row per applied lifecycle transition (from, to, why, who, causing event).",
)
Index("ix_order_transitions_order", order_transitions.c.order_id, order_transitions.c.id)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSONB, nullable=False),
    Column("order_id", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Commands by (scope, Idempotency-Key): a retry gets the first answer back. A guest scope is the hash "
    "of that browser's Guest-Session secret; no lookup token is ever stored in a response.",
)
Index("ix_idempotency_keys_created", idempotency_keys.c.created_at)

coupon_redemptions = Table(
    "coupon_redemptions",
    metadata,
    Column("code", String(64), ForeignKey("coupons.code"), primary_key=True),
    Column("order_id", UUID(as_uuid=True), ForeignKey("orders.id"), primary_key=True),
    Column("customer_id", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="One row per order that used a coupon; unique per customer for once-per-customer coupons.",
)
Index(
    "uq_coupon_redemptions_once_per_customer",
    coupon_redemptions.c.code,
    coupon_redemptions.c.customer_id,
    unique=True,
    postgresql_where=coupon_redemptions.c.customer_id.isnot(None),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("order_id", UUID(as_uuid=True), ForeignKey("orders.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=False),
    Column("restock", Boolean, nullable=False),
    Column("requested_by", Text, nullable=False),
    # the role the refund was granted under: the support limit counts the order's support refunds together
    Column("requested_role", String(16), nullable=True),
    Column("state", String(16), nullable=False),
    Column("provider_refund_id", Text, nullable=True),
    # four eyes: who approved a refund that support asked for above its limit (requested_by is who asked)
    Column("approved_by", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("state IN ('requested', 'succeeded', 'failed', 'reversed')", name="state_known"),
    comment="Refunds the order asked payment for (by staff or after a late payment without stock), and their outcome.",
)
Index("ix_refunds_order", refunds.c.order_id)

order_notes = Table(
    "order_notes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("order_id", UUID(as_uuid=True), ForeignKey("orders.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("event_id", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Facts about an order that change no state (an automatic refund, an ignored duplicate): part of its timeline.",
)
Index("ix_order_notes_order", order_notes.c.order_id, order_notes.c.id)

catalogue_changes = Table(
    "catalogue_changes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("key", String(64), nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("before", JSONB, nullable=True),
    Column("after", JSONB, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('product', 'coupon', 'tax_rate', 'shipping_rate')", name="kind_known"),
    comment="Audit trail of prices: one row per catalogue, coupon, tax or shipping row an admin wrote (who, why, "
    "before, after), in the transaction that wrote it.",
)
Index("ix_catalogue_changes_item", catalogue_changes.c.kind, catalogue_changes.c.key, catalogue_changes.c.id)

refund_approvals = Table(
    "refund_approvals",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("order_id", UUID(as_uuid=True), ForeignKey("orders.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=False),
    Column("restock", Boolean, nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("state", String(16), nullable=False, server_default=text("'pending'")),
    Column("decided_by", Text, nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("decision_reason", Text, nullable=True),
    # the refund an approval issued, through the same path as any staff refund
    Column("refund_id", UUID(as_uuid=True), ForeignKey("refunds.id"), nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("state IN ('pending', 'approved', 'rejected')", name="state_known"),
    CheckConstraint("(state = 'pending') = (decided_by IS NULL)", name="decided_when_not_pending"),
    CheckConstraint("(state = 'approved') = (refund_id IS NOT NULL)", name="approved_has_refund"),
    comment="Refunds support asked for above its limit, waiting for a second person (finance): who asked, who "
    "decided, when, why, and the refund an approval issued.",
)
Index("ix_refund_approvals_state", refund_approvals.c.state, refund_approvals.c.requested_at, refund_approvals.c.id)
Index("ix_refund_approvals_order", refund_approvals.c.order_id)
