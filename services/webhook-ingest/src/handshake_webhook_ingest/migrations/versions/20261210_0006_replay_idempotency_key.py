"""provider_event_replays.idempotency_key: a staff member's double click or browser retry replays once.

The unique index over (actor, idempotency_key) is what makes two concurrent requests with one key forward the
event once: the second waits on it and finds the first. Older rows have no key (NULLs never collide).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 00:00:00
"""
import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable, no default: no table rewrite
    op.add_column('provider_event_replays', sa.Column('idempotency_key', sa.Text(), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index('ux_provider_event_replays_actor_idempotency_key', 'provider_event_replays',
                        ['actor', 'idempotency_key'], unique=True, postgresql_concurrently=True,
                        if_not_exists=True)


def downgrade() -> None:
    op.drop_index('ux_provider_event_replays_actor_idempotency_key', table_name='provider_event_replays')
    op.drop_column('provider_event_replays', 'idempotency_key')
