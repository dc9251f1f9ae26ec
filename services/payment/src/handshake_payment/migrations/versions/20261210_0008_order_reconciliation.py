"""Reconciliation runs for one order (staff ask for it from the order's page), found again by order; and the
Idempotency-Key rows that make a repeated staff request answer the first run instead of starting another.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 10:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('reconciliation_runs', sa.Column('order_id', sa.UUID(), nullable=True))
    op.drop_constraint(op.f('ck_reconciliation_runs_trigger_known'), 'reconciliation_runs', type_='check')
    op.create_check_constraint(op.f('ck_reconciliation_runs_trigger_known'), 'reconciliation_runs',
                               "trigger IN ('scheduled', 'manual', 'manual-order')")
    op.create_index('ix_reconciliation_runs_order', 'reconciliation_runs', ['order_id'], unique=False,
                    postgresql_where=sa.text('order_id IS NOT NULL'))
    op.create_index('ix_reconciliation_runs_detail', 'reconciliation_runs', ['detail'], unique=False,
                    postgresql_using='gin', postgresql_ops={'detail': 'jsonb_path_ops'})
    op.create_table('idempotency_keys',
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.UUID(), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'key', name=op.f('pk_idempotency_keys')),
    comment='Staff actions by (scope, Idempotency-Key): a repeated request (double click, browser retry) gets the first answer back instead of acting again.'
    )
    op.create_index('ix_idempotency_keys_created', 'idempotency_keys', ['created_at'], unique=False)
    op.create_table_comment('reconciliation_runs', 'One row per reconciliation run (scheduled, or asked by staff for everything due or for one order): what it looked at at the provider, what it repaired, what it flagged for review, and what it could not check.',
                            existing_comment='One row per reconciliation run (scheduled or asked by finance/admin): what it looked at at the provider, what it repaired, what it flagged for review, and what it could not check.')


def downgrade() -> None:
    op.create_table_comment('reconciliation_runs', 'One row per reconciliation run (scheduled or asked by finance/admin): what it looked at at the provider, what it repaired, what it flagged for review, and what it could not check.')
    op.drop_index('ix_idempotency_keys_created', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_index('ix_reconciliation_runs_detail', table_name='reconciliation_runs',
                  postgresql_using='gin', postgresql_ops={'detail': 'jsonb_path_ops'})
    op.drop_index('ix_reconciliation_runs_order', table_name='reconciliation_runs',
                  postgresql_where=sa.text('order_id IS NOT NULL'))
    # runs for one order cannot be told by the old constraint: they go with the column
    op.execute("DELETE FROM reconciliation_runs WHERE trigger = 'manual-order'")
    op.drop_constraint(op.f('ck_reconciliation_runs_trigger_known'), 'reconciliation_runs', type_='check')
    op.create_check_constraint(op.f('ck_reconciliation_runs_trigger_known'), 'reconciliation_runs',
                               "trigger IN ('scheduled', 'manual')")
    op.drop_column('reconciliation_runs', 'order_id')
