"""outbox.next_attempt_at / parked_at and outbox_releases: a row the broker keeps refusing (too large, unknown
topic, not authorised) holds back only its own order, with a backoff, and is parked after bounded attempts
until an admin releases it; every release is recorded.

Nullable columns without a default are metadata-only: no table rewrite.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:30:00
"""
from handshake_shared.migration_ops import add_outbox_parking_v2, drop_outbox_parking_v2


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_outbox_parking_v2()


def downgrade() -> None:
    drop_outbox_parking_v2()
