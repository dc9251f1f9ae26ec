"""Provider events parked until the PaymentIntent they are about is stored on an attempt; disputes announced
(one payment.disputed per provider dispute, however often its event comes).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 09:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('parked_provider_events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('provider_event_id', sa.Text(), nullable=False),
    sa.Column('payment_intent_id', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('provider_created', sa.BigInteger(), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('parked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_parked_provider_events')),
    sa.UniqueConstraint('provider_event_id', name=op.f('uq_parked_provider_events_provider_event_id')),
    comment='Provider events about a PaymentIntent no attempt knows yet (it arrived before the intent id was stored): kept and applied once an attempt stores or adopts that intent, in the provider\'s order.'
    )
    op.create_index('ix_parked_provider_events_intent', 'parked_provider_events', ['payment_intent_id', 'provider_created'], unique=False)
    op.create_table('provider_disputes',
    sa.Column('dispute_id', sa.Text(), nullable=False),
    sa.Column('attempt_id', sa.UUID(), nullable=False),
    sa.Column('payment_intent_id', sa.Text(), nullable=False),
    sa.Column('provider_event_id', sa.Text(), nullable=True),
    sa.Column('announced_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['attempt_id'], ['payment_attempts.id'], name=op.f('fk_provider_disputes_attempt_id_payment_attempts')),
    sa.PrimaryKeyConstraint('dispute_id', name=op.f('pk_provider_disputes')),
    comment='One row per provider dispute announced as payment.disputed (written with the outbox row): a replayed or redelivered dispute event announces nothing again.'
    )
    op.create_index('ix_provider_disputes_attempt', 'provider_disputes', ['attempt_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_provider_disputes_attempt', table_name='provider_disputes')
    op.drop_table('provider_disputes')
    op.drop_index('ix_parked_provider_events_intent', table_name='parked_provider_events')
    op.drop_table('parked_provider_events')
