"""Refunds with their audit trail; captured amount and duplicate marking on attempts, and at most one
attempt per order holding its payment.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 06:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('payment_attempts', sa.Column('amount_captured', sa.BigInteger(), nullable=True))
    op.add_column('payment_attempts', sa.Column('duplicate_of', sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f('fk_payment_attempts_duplicate_of_payment_attempts'), 'payment_attempts', 'payment_attempts',
        ['duplicate_of'], ['id'],
    )
    # attempts captured before this revision took their whole amount (no partial capture existed)
    op.execute("UPDATE payment_attempts SET amount_captured = amount WHERE state = 'succeeded'")
    op.create_index(
        'uq_payment_attempts_one_payment_per_order', 'payment_attempts', ['order_id'], unique=True,
        postgresql_where=sa.text("state IN ('authorized', 'succeeded') AND duplicate_of IS NULL"),
    )
    op.create_table('refunds',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('attempt_id', sa.UUID(), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('automatic', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('requested_by', sa.Text(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('provider_refund_id', sa.Text(), nullable=True),
    sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failure_code', sa.Text(), nullable=True),
    sa.Column('failure_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_refunds_amount_positive')),
    sa.CheckConstraint("state IN ('requested', 'succeeded', 'failed')", name=op.f('ck_refunds_state_known')),
    sa.ForeignKeyConstraint(['attempt_id'], ['payment_attempts.id'], name=op.f('fk_refunds_attempt_id_payment_attempts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refunds')),
    sa.UniqueConstraint('provider_refund_id', name=op.f('uq_refunds_provider_refund_id')),
    comment='One row per refund of a captured attempt (asked by the order, or automatic for a second capture) and the Stripe refund that carried it out. Requested and succeeded rows never sum above the capture.'
    )
    op.create_index('ix_refunds_attempt', 'refunds', ['attempt_id'], unique=False)
    op.create_index('ix_refunds_order', 'refunds', ['order_id', 'created_at'], unique=False)
    op.create_table('refund_transitions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('refund_id', sa.UUID(), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['refund_id'], ['refunds.id'], name=op.f('fk_refund_transitions_refund_id_refunds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refund_transitions')),
    comment='Audit trail: one row per refund state change (from, to, why, causing event).'
    )
    op.create_index('ix_refund_transitions_refund', 'refund_transitions', ['refund_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_refund_transitions_refund', table_name='refund_transitions')
    op.drop_table('refund_transitions')
    op.drop_index('ix_refunds_order', table_name='refunds')
    op.drop_index('ix_refunds_attempt', table_name='refunds')
    op.drop_table('refunds')
    op.drop_index('uq_payment_attempts_one_payment_per_order', table_name='payment_attempts')
    op.drop_constraint(op.f('fk_payment_attempts_duplicate_of_payment_attempts'), 'payment_attempts', type_='foreignkey')
    op.drop_column('payment_attempts', 'duplicate_of')
    op.drop_column('payment_attempts', 'amount_captured')
