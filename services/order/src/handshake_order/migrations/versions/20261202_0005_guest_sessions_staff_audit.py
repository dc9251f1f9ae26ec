"""catalogue_changes: who changed a price, coupon, tax or shipping rate, why, before and after.
refunds.requested_role: the support refund limit counts an order's support refunds together.
idempotency_keys: guest answers were stored with the plaintext lookup token under one shared "guest" scope;
guest scopes are now per browser, so those rows can never be replayed again and are deleted, and any
lookup token left in a stored answer is removed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalogue_changes',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('before', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('after', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('product', 'coupon', 'tax_rate', 'shipping_rate')",
                       name=op.f('ck_catalogue_changes_kind_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalogue_changes')),
    comment='Audit trail of prices: one row per catalogue, coupon, tax or shipping row an admin wrote (who, why, '
    'before, after), in the transaction that wrote it.'
    )
    op.create_index('ix_catalogue_changes_item', 'catalogue_changes', ['kind', 'key', 'id'], unique=False)
    # nullable without a default: metadata-only, no table rewrite
    op.add_column('refunds', sa.Column('requested_role', sa.String(length=16), nullable=True))
    op.create_table_comment(
        'idempotency_keys',
        'Commands by (scope, Idempotency-Key): a retry gets the first answer back. A guest scope is the hash '
        "of that browser's Guest-Session secret; no lookup token is ever stored in a response.",
        existing_comment='Checkout requests by (customer scope, Idempotency-Key): a retry gets the first answer back.',
    )
    op.execute("DELETE FROM idempotency_keys WHERE scope = 'guest'")
    op.execute("UPDATE idempotency_keys SET response = response - 'lookup_token' "
               "WHERE response->>'lookup_token' IS NOT NULL")


def downgrade() -> None:
    # the deleted guest answers and stripped tokens are not restored: they must not exist
    op.create_table_comment(
        'idempotency_keys',
        'Checkout requests by (customer scope, Idempotency-Key): a retry gets the first answer back.',
        existing_comment='Commands by (scope, Idempotency-Key): a retry gets the first answer back. A guest scope is '
        "the hash of that browser's Guest-Session secret; no lookup token is ever stored in a response.",
    )
    op.drop_column('refunds', 'requested_role')
    op.drop_index('ix_catalogue_changes_item', table_name='catalogue_changes')
    op.drop_table('catalogue_changes')
