"""Initial payment schema: payment attempts with their audit trail, outbox/inbox/dead letters.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 03:19:27.294940
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
    op.create_table('payment_attempts',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('order_id', sa.UUID(), nullable=False),
    sa.Column('request_id', sa.Text(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('provider_intent_id', sa.Text(), nullable=True),
    sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failure_code', sa.Text(), nullable=True),
    sa.Column('failure_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_payment_attempts_amount_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_attempts')),
    sa.UniqueConstraint('provider_intent_id', name=op.f('uq_payment_attempts_provider_intent_id')),
    sa.UniqueConstraint('request_id', name=op.f('uq_payment_attempts_request_id')),
    comment='One row per payment request of an order: its state and the Stripe PaymentIntent created for it (at most one). Client secrets are never stored.'
    )
    op.create_index('ix_payment_attempts_order', 'payment_attempts', ['order_id', 'created_at'], unique=False)
    op.create_table('attempt_transitions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('attempt_id', sa.UUID(), nullable=False),
    sa.Column('from_state', sa.String(length=32), nullable=True),
    sa.Column('to_state', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=True),
    sa.Column('provider_event_id', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['attempt_id'], ['payment_attempts.id'], name=op.f('fk_attempt_transitions_attempt_id_payment_attempts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attempt_transitions')),
    comment='Audit trail: one row per applied attempt transition (from, to, why, causing event, provider event).'
    )
    op.create_index('ix_attempt_transitions_attempt', 'attempt_transitions', ['attempt_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_attempt_transitions_attempt', table_name='attempt_transitions')
    op.drop_table('attempt_transitions')
    op.drop_index('ix_payment_attempts_order', table_name='payment_attempts')
    op.drop_table('payment_attempts')
    drop_messaging_tables_v1()
