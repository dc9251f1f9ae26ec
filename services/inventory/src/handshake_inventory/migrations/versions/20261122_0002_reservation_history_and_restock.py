"""Reservation history and restocks: the reservation_transitions audit trail (backfilled from existing
reservations), the `restocked` reservation state and the `restock` stock movement.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:06:33.114769
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

OLD_STATES = "'held', 'committed', 'released', 'expired'"
NEW_STATES = "'held', 'committed', 'released', 'expired', 'restocked'"
OLD_KINDS = "'reserve', 'commit', 'release', 'expire', 'adjust'"
NEW_KINDS = "'reserve', 'commit', 'release', 'expire', 'restock', 'adjust'"
OLD_COMMENT = 'One all-or-nothing stock hold per order: held until the order is paid (committed) or not (released, expired).'
NEW_COMMENT = (
    'One all-or-nothing stock hold per order: held until the order is paid (committed) or not (released, expired); '
    'a late payment re-reserves and commits, a sale undone is restocked.'
)


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(name), table, type_='check')
    op.create_check_constraint(op.f(name), table, condition)


def upgrade() -> None:
    _replace_check('reservations', 'ck_reservations_state_known', f"state IN ({NEW_STATES})")
    _replace_check('stock_movements', 'ck_stock_movements_kind_known', f"kind IN ({NEW_KINDS})")
    op.create_table_comment('reservations', NEW_COMMENT, existing_comment=OLD_COMMENT)
    op.create_table('reservation_transitions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('reservation_id', sa.UUID(), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint(f"from_state IS NULL OR from_state IN ({NEW_STATES})", name=op.f('ck_reservation_transitions_from_state_known')),
    sa.CheckConstraint(f"to_state IN ({NEW_STATES})", name=op.f('ck_reservation_transitions_to_state_known')),
    sa.ForeignKeyConstraint(['reservation_id'], ['reservations.id'], name=op.f('fk_reservation_transitions_reservation_id_reservations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservation_transitions')),
    comment="Audit trail of each reservation's lifecycle: every applied transition with why, who and which event."
    )
    op.create_index('ix_reservation_transitions_reservation', 'reservation_transitions', ['reservation_id', 'id'], unique=False)
    # Reservations made before this revision get the history we can still know: created held, and
    # (if they left held) one step to their current state at their last update. Before 0002 a
    # reservation left held at most once, so nothing is missing but the cause.
    op.execute(
        "INSERT INTO reservation_transitions (reservation_id, from_state, to_state, reason, actor, at) "
        "SELECT id, NULL, 'held', 'order placed', 'migration 0002 (backfill)', created_at FROM reservations "
        "ORDER BY created_at, id"
    )
    op.execute(
        "INSERT INTO reservation_transitions (reservation_id, from_state, to_state, reason, actor, at) "
        "SELECT id, 'held', state, 'before history was recorded', 'migration 0002 (backfill)', updated_at "
        "FROM reservations WHERE state <> 'held' ORDER BY updated_at, id"
    )


def downgrade() -> None:
    # fails on purpose while restocked reservations or restock movements exist: 0001 cannot represent them
    op.drop_index('ix_reservation_transitions_reservation', table_name='reservation_transitions')
    op.drop_table('reservation_transitions')
    op.create_table_comment('reservations', OLD_COMMENT, existing_comment=NEW_COMMENT)
    _replace_check('stock_movements', 'ck_stock_movements_kind_known', f"kind IN ({OLD_KINDS})")
    _replace_check('reservations', 'ck_reservations_state_known', f"state IN ({OLD_STATES})")
