"""Initial inventory schema: stock per SKU, reservations and their lines, the stock movement ledger, outbox/inbox.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 03:18:34.636930
"""
from alembic import op
import sqlalchemy as sa

from handshake_shared.migration_ops import create_messaging_tables_v1, drop_messaging_tables_v1
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables_v1()
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
    drop_messaging_tables_v1()
