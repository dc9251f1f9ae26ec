"""Initial inventory schema: stock per SKU, reservations and their lines, the stock movement ledger, outbox/inbox.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 03:18:34.636930
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('consumer', sa.Text(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('kafka_offset', sa.BigInteger(), nullable=True),
    sa.Column('message_key', sa.Text(), nullable=True),
    sa.Column('event_id', sa.Text(), nullable=True),
    sa.Column('event_type', sa.Text(), nullable=True),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters')),
    comment='Messages a consumer gave up on after bounded retries; also published to <topic>.dlq.'
    )
    op.create_table('inbox',
    sa.Column('consumer', sa.Text(), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'event_id', name=op.f('pk_inbox')),
    comment='Every consumed event id, written in the same transaction as its effects: a redelivery finds it and does nothing.'
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('message_key', sa.Text(), nullable=False),
    sa.Column('bucket', sa.SmallInteger(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=True),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('headers', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_id')),
    comment='Events committed with the state change that caused them, waiting for the relay to publish.'
    )
    op.create_index('ix_outbox_unpublished', 'outbox', ['bucket', 'id'], unique=False, postgresql_where=sa.text('published_at IS NULL'))
    op.create_table('outbox_sequences',
    sa.Column('aggregate_id', sa.Text(), nullable=False),
    sa.Column('last_sequence', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('aggregate_id', name=op.f('pk_outbox_sequences')),
    comment='Per-order event sequence of this service; the row lock also orders concurrent writers.'
    )
    op.create_table('reservations',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('order_id', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("state IN ('held', 'committed', 'released', 'expired')", name=op.f('ck_reservations_state_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservations')),
    sa.UniqueConstraint('order_id', name=op.f('uq_reservations_order_id')),
    comment='One all-or-nothing stock hold per order: held until the order is paid (committed) or not (released, expired).'
    )
    op.create_index('ix_reservations_held_expiry', 'reservations', ['expires_at'], unique=False, postgresql_where=sa.text("state = 'held'"))
    op.create_table('stock_items',
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('available', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('reserved', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('sold', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('available >= 0', name=op.f('ck_stock_items_available_non_negative')),
    sa.CheckConstraint('reserved >= 0', name=op.f('ck_stock_items_reserved_non_negative')),
    sa.CheckConstraint('sold >= 0', name=op.f('ck_stock_items_sold_non_negative')),
    sa.PrimaryKeyConstraint('sku', name=op.f('pk_stock_items')),
    comment='Stock per SKU: units free to sell, held by reservations, and sold (committed). Never negative.'
    )
    op.create_table('reservation_lines',
    sa.Column('reservation_id', sa.UUID(), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_reservation_lines_quantity_positive')),
    sa.ForeignKeyConstraint(['reservation_id'], ['reservations.id'], name=op.f('fk_reservation_lines_reservation_id_reservations')),
    sa.ForeignKeyConstraint(['sku'], ['stock_items.sku'], name=op.f('fk_reservation_lines_sku_stock_items')),
    sa.PrimaryKeyConstraint('reservation_id', 'sku', name=op.f('pk_reservation_lines')),
    comment='Units of one SKU held by a reservation (duplicate order lines are merged per SKU).'
    )
    op.create_table('stock_movements',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('delta_available', sa.Integer(), nullable=False),
    sa.Column('delta_reserved', sa.Integer(), nullable=False),
    sa.Column('delta_sold', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('order_id', sa.Text(), nullable=True),
    sa.Column('event_id', sa.Text(), nullable=True),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind = 'adjust' OR delta_available + delta_reserved + delta_sold = 0", name=op.f('ck_stock_movements_only_adjustments_change_total')),
    sa.CheckConstraint("kind IN ('reserve', 'commit', 'release', 'expire', 'adjust')", name=op.f('ck_stock_movements_kind_known')),
    sa.ForeignKeyConstraint(['sku'], ['stock_items.sku'], name=op.f('fk_stock_movements_sku_stock_items')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stock_movements')),
    comment='Audit ledger: one row per stock change (who, why, which order and event); its sums equal stock_items.'
    )
    op.create_index('ix_stock_movements_order', 'stock_movements', ['order_id'], unique=False)
    op.create_index('ix_stock_movements_sku', 'stock_movements', ['sku', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_stock_movements_sku', table_name='stock_movements')
    op.drop_index('ix_stock_movements_order', table_name='stock_movements')
    op.drop_table('stock_movements')
    op.drop_table('reservation_lines')
    op.drop_table('stock_items')
    op.drop_index('ix_reservations_held_expiry', table_name='reservations', postgresql_where=sa.text("state = 'held'"))
    op.drop_table('reservations')
    op.drop_table('outbox_sequences')
    op.drop_index('ix_outbox_unpublished', table_name='outbox', postgresql_where=sa.text('published_at IS NULL'))
    op.drop_table('outbox')
    op.drop_table('inbox')
    op.drop_table('dead_letters')
