"""Staff operations: orders.contact_email (search by the customer's email), refunds.approved_by and
refund_approvals (four eyes on support refunds above the limit), and the indexes of the staff search and of
an order's event list. Additive only: old code neither reads nor writes any of it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 01:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable without a default: metadata-only, no table rewrite
    op.add_column('orders', sa.Column('contact_email', sa.Text(), nullable=True))
    op.add_column('refunds', sa.Column('approved_by', sa.Text(), nullable=True))
    op.create_index('ix_orders_created', 'orders', ['created_at', 'id'])
    op.create_index('ix_orders_contact_email', 'orders', ['contact_email', 'created_at'],
                    postgresql_where=sa.text('contact_email IS NOT NULL'))
    op.create_index('ix_orders_payment_intent', 'orders', ['payment_intent_id'],
                    postgresql_where=sa.text('payment_intent_id IS NOT NULL'))
    op.create_index('ix_outbox_message_key', 'outbox', ['message_key', 'id'])
    op.create_table('refund_approvals',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('restock', sa.Boolean(), nullable=False),
    sa.Column('requested_by', sa.Text(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('state', sa.String(length=16), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('decided_by', sa.Text(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decision_reason', sa.Text(), nullable=True),
    sa.Column('refund_id', sa.UUID(), nullable=True),
    sa.CheckConstraint('amount > 0', name=op.f('ck_refund_approvals_amount_positive')),
    sa.CheckConstraint("state IN ('pending', 'approved', 'rejected')", name=op.f('ck_refund_approvals_state_known')),
    sa.CheckConstraint("(state = 'pending') = (decided_by IS NULL)",
                       name=op.f('ck_refund_approvals_decided_when_not_pending')),
    sa.CheckConstraint("(state = 'approved') = (refund_id IS NOT NULL)",
                       name=op.f('ck_refund_approvals_approved_has_refund')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_refund_approvals_order_id_orders')),
    sa.ForeignKeyConstraint(['refund_id'], ['refunds.id'], name=op.f('fk_refund_approvals_refund_id_refunds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refund_approvals')),
    comment='Refunds support asked for above its limit, waiting for a second person (finance): who asked, who '
    'decided, when, why, and the refund an approval issued.'
    )
    op.create_index('ix_refund_approvals_state', 'refund_approvals', ['state', 'requested_at', 'id'])
    op.create_index('ix_refund_approvals_order', 'refund_approvals', ['order_id'])


def downgrade() -> None:
    op.drop_index('ix_refund_approvals_order', table_name='refund_approvals')
    op.drop_index('ix_refund_approvals_state', table_name='refund_approvals')
    op.drop_table('refund_approvals')
    op.drop_index('ix_outbox_message_key', table_name='outbox')
    op.drop_index('ix_orders_payment_intent', table_name='orders')
    op.drop_index('ix_orders_contact_email', table_name='orders')
    op.drop_index('ix_orders_created', table_name='orders')
    op.drop_column('refunds', 'approved_by')
    op.drop_column('orders', 'contact_email')
