"""Reconciliation runs; per attempt, how often its PaymentIntent creation was tried (a retry looks for a
PaymentIntent a lost answer left behind) and the provider's amount/currency when it differed from the attempt.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 07:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reconciliation_runs',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('requested_by', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('checked', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('repaired', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('flagged', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('errors', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.CheckConstraint("trigger IN ('scheduled', 'manual')", name=op.f('ck_reconciliation_runs_trigger_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_runs')),
    comment='One row per reconciliation run (scheduled or asked by finance/admin): what it looked at at the provider, what it repaired, what it flagged for review, and what it could not check.'
    )
    op.create_index('ix_reconciliation_runs_started', 'reconciliation_runs', ['started_at'], unique=False)
    op.add_column('payment_attempts', sa.Column('intent_create_calls', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('payment_attempts', sa.Column('provider_mismatch', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('payment_attempts', 'provider_mismatch')
    op.drop_column('payment_attempts', 'intent_create_calls')
    op.drop_index('ix_reconciliation_runs_started', table_name='reconciliation_runs')
    op.drop_table('reconciliation_runs')
