"""provider_events.scrubbed_at: stored webhook bodies lose client secrets and billing details after a window.
dead_letter_redrives and ix_inbox_processed_at: dead letters an admin redrives are audited, at most once each;
old inbox rows are deleted in batches by the retention loop, which needs them in age order.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:00:00
"""
from handshake_shared.migration_ops import add_retention_and_redrive_v3, drop_retention_and_redrive_v3
import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_retention_and_redrive_v3()
    # when a stored webhook body was reduced to what reconciliation and disputes need; nullable, no default:
    # no table rewrite
    op.add_column('provider_events', sa.Column('scrubbed_at', sa.DateTime(timezone=True), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index('ix_provider_events_unscrubbed', 'provider_events', ['first_received_at'], unique=False,
                        postgresql_where=sa.text('scrubbed_at IS NULL'), postgresql_concurrently=True,
                        if_not_exists=True)


def downgrade() -> None:
    op.drop_index('ix_provider_events_unscrubbed', table_name='provider_events',
                  postgresql_where=sa.text('scrubbed_at IS NULL'))
    op.drop_column('provider_events', 'scrubbed_at')
    drop_retention_and_redrive_v3()
