"""orders.version: a counter raised by every change of an order row, so a client can wait for a change
(GET /v1/orders/{id}?wait_for_change=<version>) and compare versions. Existing orders start at 1.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 04:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('orders', sa.Column('version', sa.BigInteger(), server_default=sa.text('1'), nullable=False))


def downgrade() -> None:
    op.drop_column('orders', 'version')
