"""Refunds the provider accepted and failed afterwards are kept as `reversed` (they no longer count).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 12:00:00
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint(op.f('ck_refunds_state_known'), 'refunds', type_='check')
    op.create_check_constraint(
        op.f('ck_refunds_state_known'), 'refunds', "state IN ('requested', 'succeeded', 'failed', 'reversed')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f('ck_refunds_state_known'), 'refunds', type_='check')
    op.create_check_constraint(op.f('ck_refunds_state_known'), 'refunds', "state IN ('requested', 'succeeded', 'failed')")
