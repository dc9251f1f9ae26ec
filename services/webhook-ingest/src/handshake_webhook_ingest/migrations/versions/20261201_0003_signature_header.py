"""provider_events.signature_header: the Stripe-Signature a delivery came with, forwarded with the raw body so
the payment service can check the signature itself.

A nullable column without a default is metadata-only: no table rewrite. Rows stored before it have none;
their replays are confirmed with the provider by the consumer instead.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('provider_events', sa.Column('signature_header', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('provider_events', 'signature_header')
