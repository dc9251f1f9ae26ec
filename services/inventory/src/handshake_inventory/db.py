"""Inventory service tables. Quantities are integer units; every table says what it is for.

Per SKU, available + reserved + sold changes only through admin adjustments: reserving, committing,
releasing, expiring and restocking move units between the columns. The CHECK constraints are the last line of defence
against overselling; the stock_movements CHECK refuses a non-adjustment that creates or destroys units.
"""

from sqlalchemy import (
    BigInteger,
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
from sqlalchemy.dialects.postgresql import UUID

from handshake_inventory.domain.reservations import ReservationState
from handshake_inventory.domain.stock import MovementKind
from handshake_shared.db import add_messaging_tables, make_metadata

metadata = make_metadata()
messaging = add_messaging_tables(metadata)

MOVEMENT_KINDS = tuple(k.value for k in MovementKind)

stock_items = Table(
    "stock_items",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("available", Integer, nullable=False, server_default=text("0")),
    Column("reserved", Integer, nullable=False, server_default=text("0")),
    Column("sold", Integer, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("available >= 0", name="available_non_negative"),
    CheckConstraint("reserved >= 0", name="reserved_non_negative"),
    CheckConstraint("sold >= 0", name="sold_non_negative"),
    comment="Stock per SKU: units free to sell, held by reservations, and sold (committed). Never negative.",
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    # one reservation per order: a second order.placed for the same order finds it and does nothing
    Column("order_id", Text, nullable=False, unique=True),
    Column("state", String(16), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("state IN (" + ", ".join(f"'{s.value}'" for s in ReservationState) + ")", name="state_known"),
    comment=(
        "One all-or-nothing stock hold per order: held until the order is paid (committed) or not (released, "
        "expired); a late payment re-reserves and commits, a sale undone is restocked."
    ),
)
# the expiry sweeper and the overdue gauge read held reservations by expiry only
Index(
    "ix_reservations_held_expiry",
    reservations.c.expires_at,
    postgresql_where=reservations.c.state == ReservationState.HELD.value,
)

reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column("reservation_id", UUID(as_uuid=True), ForeignKey("reservations.id"), primary_key=True),
    Column("sku", String(64), ForeignKey("stock_items.sku"), primary_key=True),
    Column("quantity", Integer, nullable=False),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    comment="Units of one SKU held by a reservation (duplicate order lines are merged per SKU).",
)

stock_movements = Table(
    "stock_movements",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("sku", String(64), ForeignKey("stock_items.sku"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("delta_available", Integer, nullable=False),
    Column("delta_reserved", Integer, nullable=False),
    Column("delta_sold", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("order_id", Text, nullable=True),
    Column("event_id", Text, nullable=True),
    Column("actor", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in MOVEMENT_KINDS) + ")", name="kind_known"),
    CheckConstraint(
        "kind = 'adjust' OR delta_available + delta_reserved + delta_sold = 0", name="only_adjustments_change_total"
    ),
    comment="Audit ledger: one row per stock change (who, why, which order and event); its sums equal stock_items.",
)
Index("ix_stock_movements_sku", stock_movements.c.sku, stock_movements.c.id)
Index("ix_stock_movements_order", stock_movements.c.order_id)

_STATES = ", ".join(f"'{s.value}'" for s in ReservationState)

reservation_transitions = Table(
    "reservation_transitions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("reservation_id", UUID(as_uuid=True), ForeignKey("reservations.id"), nullable=False),
    # NULL for the row that created the reservation (held)
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", Text, nullable=False),
    # the consumed event that caused the step; NULL for the sweeper (the TTL is the cause)
    Column("event_id", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"to_state IN ({_STATES})", name="to_state_known"),
    CheckConstraint(f"from_state IS NULL OR from_state IN ({_STATES})", name="from_state_known"),
    comment="Audit trail of each reservation's lifecycle: every applied transition with why, who and which event.",
)
Index("ix_reservation_transitions_reservation", reservation_transitions.c.reservation_id, reservation_transitions.c.id)
