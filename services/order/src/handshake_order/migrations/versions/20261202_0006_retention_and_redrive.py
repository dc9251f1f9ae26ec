"""dead_letter_redrives and ix_inbox_processed_at: dead letters an admin redrives are audited, at most once each;
old inbox rows are deleted in batches by the retention loop, which needs them in age order.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:00:00
"""
from handshake_shared.migration_ops import add_retention_and_redrive_v3, drop_retention_and_redrive_v3


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_retention_and_redrive_v3()


def downgrade() -> None:
    drop_retention_and_redrive_v3()
