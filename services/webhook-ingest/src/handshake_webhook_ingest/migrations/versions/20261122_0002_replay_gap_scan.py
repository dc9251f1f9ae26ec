"""Replay audit, gap-scan cursor and runs, and provider_events.source (webhook | gap_scan).

Adding `source` with a constant default is metadata-only in PostgreSQL 11+: no table rewrite.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:49:50.581225
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('provider_event_cursor',
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('last_created', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('provider', name=op.f('pk_provider_event_cursor')),
    comment="Where the next gap scan starts listing the provider's events."
    )
    op.create_table('provider_event_gap_scans',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('listed_from', sa.BigInteger(), nullable=False),
    sa.Column('cursor_after', sa.BigInteger(), nullable=True),
    sa.Column('listed', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('ingested', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_event_gap_scans')),
    comment='One row per gap scan: events listed at the provider and how many were missing (ingested).'
    )
    op.create_table('provider_event_replays',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('provider_event_id', sa.Text(), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('replayed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('forwarded_event_id', sa.UUID(), nullable=False),
    sa.CheckConstraint('length(reason) >= 3', name=op.f('ck_provider_event_replays_reason_given')),
    sa.ForeignKeyConstraint(['provider_event_id'], ['provider_events.provider_event_id'], name=op.f('fk_provider_event_replays_provider_event_id_provider_events'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_event_replays')),
    comment='Audit of support/admin replays: each re-forwards a stored provider event as a new CloudEvent.'
    )
    op.create_index('ix_provider_event_replays_provider_event_id', 'provider_event_replays', ['provider_event_id'], unique=False)
    op.add_column('provider_events', sa.Column('source', sa.Text(), server_default=sa.text("'webhook'"), nullable=False))
    op.create_check_constraint(
        op.f('ck_provider_events_source_known'), 'provider_events', "source IN ('webhook', 'gap_scan')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f('ck_provider_events_source_known'), 'provider_events', type_='check')
    op.drop_column('provider_events', 'source')
    op.drop_index('ix_provider_event_replays_provider_event_id', table_name='provider_event_replays')
    op.drop_table('provider_event_replays')
    op.drop_table('provider_event_gap_scans')
    op.drop_table('provider_event_cursor')
