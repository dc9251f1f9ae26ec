"""Initial webhook-ingest schema: provider events as received, outbox/inbox.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 03:16:52.740141
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
    op.drop_table('outbox_sequences')
    op.drop_index('ix_outbox_unpublished', table_name='outbox', postgresql_where=sa.text('published_at IS NULL'))
    op.drop_table('outbox')
    op.drop_table('inbox')
    op.drop_table('dead_letters')
