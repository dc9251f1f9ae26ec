"""Initial webhook-ingest schema: provider events as received, outbox/inbox.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 03:16:52.740141
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
    op.create_table('provider_events',
    sa.Column('provider_event_id', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('api_version', sa.Text(), nullable=True),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('object_type', sa.Text(), nullable=True),
    sa.Column('object_id', sa.Text(), nullable=True),
    sa.Column('payment_intent_id', sa.Text(), nullable=True),
    sa.Column('order_id', sa.Text(), nullable=True),
    sa.Column('attempt_id', sa.Text(), nullable=True),
    sa.Column('raw_body', sa.LargeBinary(), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('delivery_count', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('first_received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('forwarded_event_id', sa.UUID(), nullable=True),
    sa.CheckConstraint('delivery_count >= 1', name=op.f('ck_provider_events_delivery_count_positive')),
    sa.PrimaryKeyConstraint('provider_event_id', name=op.f('pk_provider_events')),
    comment='Every verified provider webhook event, one row per provider event id however often it is delivered; the first delivery is forwarded to provider.events.v1 in the same transaction.'
    )
    op.create_index('ix_provider_events_object_id', 'provider_events', ['object_id'], unique=False)
    op.create_index('ix_provider_events_order_id', 'provider_events', ['order_id'], unique=False)
    op.create_index('ix_provider_events_payment_intent_id', 'provider_events', ['payment_intent_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_provider_events_payment_intent_id', table_name='provider_events')
    op.drop_index('ix_provider_events_order_id', table_name='provider_events')
    op.drop_index('ix_provider_events_object_id', table_name='provider_events')
    op.drop_table('provider_events')
    drop_messaging_tables_v1()
