"""Each attempt and refund says where its provider-calling phases stand (`recovery_point`), instead of the
point being read off its state, its provider id and its lease: a redelivery or a reconciliation run resumes
there, and reconciliation looks at exactly the rows that are not `finished`.

Rows already in flight take the point their columns imply today: an attempt still `creating` is `recorded`,
or `intent_stored` once its PaymentIntent id is stored; a refund still `requested` is `recorded`, or
`provider_refunded` once the provider refund id is stored; every other row is `finished`. A row written
later without a point starts at `recorded`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('payment_attempts', sa.Column('recovery_point', sa.String(length=16), server_default='finished',
                                                nullable=False))
    op.execute("UPDATE payment_attempts SET recovery_point = CASE WHEN provider_intent_id IS NULL "
               "THEN 'recorded' ELSE 'intent_stored' END WHERE state = 'creating'")
    # rows written from now on without a point start at the beginning (every phase checks the row first)
    op.alter_column('payment_attempts', 'recovery_point', server_default='recorded')
    op.create_check_constraint(op.f('ck_payment_attempts_recovery_point_known'), 'payment_attempts',
                               "recovery_point IN ('recorded', 'intent_stored', 'finished')")
    op.create_index('ix_payment_attempts_unfinished', 'payment_attempts', ['updated_at'], unique=False,
                    postgresql_where=sa.text("recovery_point <> 'finished'"))
    op.add_column('refunds', sa.Column('recovery_point', sa.String(length=24), server_default='finished',
                                       nullable=False))
    op.execute("UPDATE refunds SET recovery_point = CASE WHEN provider_refund_id IS NULL "
               "THEN 'recorded' ELSE 'provider_refunded' END WHERE state = 'requested'")
    op.alter_column('refunds', 'recovery_point', server_default='recorded')
    op.create_check_constraint(op.f('ck_refunds_recovery_point_known'), 'refunds',
                               "recovery_point IN ('recorded', 'provider_refunded', 'finished')")
    op.create_index('ix_refunds_unfinished', 'refunds', ['updated_at'], unique=False,
                    postgresql_where=sa.text("recovery_point <> 'finished'"))


def downgrade() -> None:
    op.drop_index('ix_refunds_unfinished', table_name='refunds', postgresql_where=sa.text("recovery_point <> 'finished'"))
    op.drop_constraint(op.f('ck_refunds_recovery_point_known'), 'refunds', type_='check')
    op.drop_column('refunds', 'recovery_point')
    op.drop_index('ix_payment_attempts_unfinished', table_name='payment_attempts',
                  postgresql_where=sa.text("recovery_point <> 'finished'"))
    op.drop_constraint(op.f('ck_payment_attempts_recovery_point_known'), 'payment_attempts', type_='check')
    op.drop_column('payment_attempts', 'recovery_point')
