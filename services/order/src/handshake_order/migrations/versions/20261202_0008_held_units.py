"""orders.holder, units, hold_seconds, payment_session_opened: the held-units cap per holder and the guest's
short hold until the payment session is opened. Existing orders have no holder (they count towards nobody's
cap) and the full hold.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('orders', sa.Column('holder', sa.Text(), nullable=True))
    op.add_column('orders', sa.Column('units', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('orders', sa.Column('hold_seconds', sa.Integer(), nullable=True))
    op.add_column('orders', sa.Column('payment_session_opened', sa.Boolean(), server_default=sa.text('false'),
                                      nullable=False))
    op.create_index('ix_orders_holder_holding', 'orders', ['holder'],
                    postgresql_where=sa.text("state IN ('draft', 'payment_pending', 'payment_failed')"))


def downgrade() -> None:
    op.drop_index('ix_orders_holder_holding', table_name='orders')
    op.drop_column('orders', 'payment_session_opened')
    op.drop_column('orders', 'hold_seconds')
    op.drop_column('orders', 'units')
    op.drop_column('orders', 'holder')
