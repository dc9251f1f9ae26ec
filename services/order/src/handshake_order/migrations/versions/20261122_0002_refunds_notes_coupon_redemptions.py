"""Refund ledger, order notes, coupon redemptions; money and stock facts on the order row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:04:10
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('coupon_redemptions',
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('customer_id', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['code'], ['coupons.code'], name=op.f('fk_coupon_redemptions_code_coupons')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_coupon_redemptions_order_id_orders')),
    sa.PrimaryKeyConstraint('code', 'order_id', name=op.f('pk_coupon_redemptions')),
    comment='One row per order that used a coupon; unique per customer for once-per-customer coupons.'
    )
    op.create_index('uq_coupon_redemptions_once_per_customer', 'coupon_redemptions', ['code', 'customer_id'], unique=True, postgresql_where=sa.text('customer_id IS NOT NULL'))
    op.create_table('order_notes',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_notes_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_notes')),
    comment='Facts about an order that change no state (an automatic refund, an ignored duplicate): part of its timeline.'
    )
    op.create_index('ix_order_notes_order', 'order_notes', ['order_id', 'id'], unique=False)
    op.create_table('refunds',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('restock', sa.Boolean(), nullable=False),
    sa.Column('requested_by', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('provider_refund_id', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("state IN ('requested', 'succeeded', 'failed')", name=op.f('ck_refunds_state_known')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_refunds_amount_positive')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_refunds_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refunds')),
    comment='Refunds the order asked payment for (by staff or after a late payment without stock), and their outcome.'
    )
    op.create_index('ix_refunds_order', 'refunds', ['order_id'], unique=False)
    op.add_column('coupons', sa.Column('once_per_customer', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('orders', sa.Column('payment_requested', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('orders', sa.Column('captured_amount', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    op.add_column('orders', sa.Column('stock_committed', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('orders', sa.Column('refunded_amount', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    op.add_column('orders', sa.Column('refund_pending_amount', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    # orders that existed before: derive the new facts from their state
    op.execute(
        "UPDATE orders SET payment_requested = (state <> 'draft' OR reservation_id IS NOT NULL), "
        "captured_amount = CASE WHEN state IN ('paid', 'fulfillment_pending', 'partially_fulfilled', 'fulfilled') "
        "THEN total ELSE 0 END, stock_committed = state IN ('fulfillment_pending', 'partially_fulfilled', 'fulfilled')"
    )
    op.create_check_constraint(
        op.f('ck_orders_refunds_within_capture'), 'orders',
        'refunded_amount >= 0 AND refund_pending_amount >= 0 AND refunded_amount + refund_pending_amount <= captured_amount',
    )
    op.create_check_constraint(
        op.f('ck_coupons_redemptions_within_limit'), 'coupons', 'max_redemptions IS NULL OR redemptions <= max_redemptions'
    )


def downgrade() -> None:
    op.drop_constraint(op.f('ck_coupons_redemptions_within_limit'), 'coupons', type_='check')
    op.drop_constraint(op.f('ck_orders_refunds_within_capture'), 'orders', type_='check')
    op.drop_column('orders', 'refund_pending_amount')
    op.drop_column('orders', 'refunded_amount')
    op.drop_column('orders', 'stock_committed')
    op.drop_column('orders', 'captured_amount')
    op.drop_column('orders', 'payment_requested')
    op.drop_column('coupons', 'once_per_customer')
    op.drop_index('ix_refunds_order', table_name='refunds')
    op.drop_table('refunds')
    op.drop_index('ix_order_notes_order', table_name='order_notes')
    op.drop_table('order_notes')
    op.drop_index('uq_coupon_redemptions_once_per_customer', table_name='coupon_redemptions', postgresql_where=sa.text('customer_id IS NOT NULL'))
    op.drop_table('coupon_redemptions')
