"""orders.payment_attempts: payment requests made for an order, capped (HANDSHAKE_MAX_PAYMENT_ATTEMPTS_PER_ORDER)
so one order cannot create PaymentIntents without end (card testing). Existing orders start at 1 when they
asked for payment once, which errs towards allowing their retries.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('orders', sa.Column('payment_attempts', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.execute("UPDATE orders SET payment_attempts = 1 WHERE payment_requested")


def downgrade() -> None:
    op.drop_column('orders', 'payment_attempts')
