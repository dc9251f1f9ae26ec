"""Initial order schema: catalogue, orders, audit trail, idempotency keys, outbox/inbox.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 03:10:39.598768
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
    op.create_table('coupons',
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('percent_bp', sa.Integer(), nullable=True),
    sa.Column('amount_off', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('max_redemptions', sa.Integer(), nullable=True),
    sa.Column('redemptions', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.CheckConstraint("kind IN ('percent', 'fixed')", name=op.f('ck_coupons_kind_known')),
    sa.CheckConstraint('amount_off IS NULL OR amount_off > 0', name=op.f('ck_coupons_amount_off_positive')),
    sa.CheckConstraint('percent_bp IS NULL OR (percent_bp > 0 AND percent_bp <= 10000)', name=op.f('ck_coupons_percent_range')),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_coupons')),
    comment='Discount codes: percent (basis points) or fixed amount in one currency.'
    )
    op.create_table('idempotency_keys',
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'key', name=op.f('pk_idempotency_keys')),
    comment='Checkout requests by (customer scope, Idempotency-Key): a retry gets the first answer back.'
    )
    op.create_index('ix_idempotency_keys_created', 'idempotency_keys', ['created_at'], unique=False)
    op.create_table('orders',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('customer_id', sa.Text(), nullable=True),
    sa.Column('lookup_token_hash', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('snapshot', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('reservation_id', sa.Text(), nullable=True),
    sa.Column('payment_attempt_id', sa.Text(), nullable=True),
    sa.Column('payment_intent_id', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('total >= 0', name=op.f('ck_orders_total_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    comment='One row per order: lifecycle state plus the immutable price snapshot taken at checkout.'
    )
    op.create_index('ix_orders_customer', 'orders', ['customer_id', 'created_at'], unique=False)
    op.create_index('ix_orders_state_updated', 'orders', ['state', 'updated_at'], unique=False)
    op.create_table('products',
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('unit_price', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.CheckConstraint('unit_price >= 0', name=op.f('ck_products_unit_price_non_negative')),
    sa.PrimaryKeyConstraint('sku', name=op.f('pk_products')),
    comment='The catalogue: the only source of prices. Clients never send a price.'
    )
    op.create_table('shipping_rates',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_shipping_rates')),
    comment='Flat shipping price per shipping method.'
    )
    op.create_table('tax_rates',
    sa.Column('region', sa.String(length=16), nullable=False),
    sa.Column('rate_bp', sa.Integer(), nullable=False),
    sa.CheckConstraint('rate_bp >= 0 AND rate_bp <= 10000', name=op.f('ck_tax_rates_rate_range')),
    sa.PrimaryKeyConstraint('region', name=op.f('pk_tax_rates')),
    comment='Tax rate per region in basis points, applied to the discounted subtotal.'
    )
    op.create_table('order_transitions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('from_state', sa.String(length=32), nullable=True),
    sa.Column('to_state', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_transitions_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_transitions')),
    comment='Audit trail: one row per applied lifecycle transition (from, to, why, who, causing event).'
    )
    op.create_index('ix_order_transitions_order', 'order_transitions', ['order_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_order_transitions_order', table_name='order_transitions')
    op.drop_table('order_transitions')
    op.drop_table('tax_rates')
    op.drop_table('shipping_rates')
    op.drop_table('products')
    op.drop_index('ix_orders_state_updated', table_name='orders')
    op.drop_index('ix_orders_customer', table_name='orders')
    op.drop_table('orders')
    op.drop_index('ix_idempotency_keys_created', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_table('coupons')
    drop_messaging_tables_v1()
