"""Capture, cancel and giving back a duplicate each say where they stand on the attempt, in a column of their
own (NULL until the operation is asked of the row), instead of being run again from the top: a redelivery or a
reconciliation run resumes there, and reconciliation finds what one of them left half-way. A capture keeps the
amount the order asked for and a cancel why the order closed, so whoever finishes them knows what was asked.

Rows already in flight take the point their columns imply:

  * capture: an attempt that ended capture_failed is `finished`; a capture in flight is not on the row (the
    order's request is redelivered and starts one);
  * cancel: an attempt cancelled because its order closed is `finished`; any other attempt of such an order
    whose intent may still be open (not succeeded, cancelled or capture_failed) is `requested`, with the
    order's why and reason taken from the cancelled one;
  * give-back, on every duplicate: an authorization not yet released, or a captured duplicate whose automatic
    refund the provider has not made, is `marked_duplicate`; one the provider refunded but not yet recorded is
    `given_back`; every other duplicate is `finished`.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-12 12:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

ORDER_CLOSED = "('order_cancelled', 'order_expired')"
UNFINISHED = "capture_point <> 'finished' OR cancel_point <> 'finished' OR give_back_point <> 'finished'"


def upgrade() -> None:
    op.add_column('payment_attempts', sa.Column('capture_point', sa.String(length=24), nullable=True))
    op.add_column('payment_attempts', sa.Column('capture_amount', sa.BigInteger(), nullable=True))
    op.add_column('payment_attempts', sa.Column('cancel_point', sa.String(length=24), nullable=True))
    op.add_column('payment_attempts', sa.Column('cancel_code', sa.Text(), nullable=True))
    op.add_column('payment_attempts', sa.Column('cancel_reason', sa.Text(), nullable=True))
    op.add_column('payment_attempts', sa.Column('give_back_point', sa.String(length=24), nullable=True))

    op.execute("UPDATE payment_attempts SET capture_point = 'finished' WHERE state = 'capture_failed'")
    op.execute("UPDATE payment_attempts SET cancel_point = 'finished' "
               f"WHERE state = 'canceled' AND failure_code IN {ORDER_CLOSED}")
    op.execute(
        "UPDATE payment_attempts a SET cancel_point = 'requested', cancel_code = closed.failure_code, "
        "cancel_reason = closed.failure_message "
        "FROM (SELECT DISTINCT ON (order_id) order_id, failure_code, failure_message FROM payment_attempts "
        f"      WHERE state = 'canceled' AND failure_code IN {ORDER_CLOSED} ORDER BY order_id, updated_at) closed "
        "WHERE a.order_id = closed.order_id AND a.provider_intent_id IS NOT NULL "
        "AND a.state NOT IN ('succeeded', 'canceled', 'capture_failed')"
    )
    op.execute(
        "UPDATE payment_attempts a SET give_back_point = CASE "
        "WHEN a.state = 'authorized' THEN 'marked_duplicate' "
        "WHEN a.state = 'succeeded' AND EXISTS (SELECT 1 FROM refunds r WHERE r.attempt_id = a.id AND r.automatic "
        "     AND r.state = 'requested' AND r.provider_refund_id IS NULL) THEN 'marked_duplicate' "
        "WHEN a.state = 'succeeded' AND EXISTS (SELECT 1 FROM refunds r WHERE r.attempt_id = a.id AND r.automatic "
        "     AND r.state = 'requested') THEN 'given_back' "
        "ELSE 'finished' END "
        "WHERE a.duplicate_of IS NOT NULL"
    )

    op.create_check_constraint(op.f('ck_payment_attempts_capture_point_known'), 'payment_attempts',
                               "capture_point IN ('requested', 'settled_at_provider', 'finished')")
    op.create_check_constraint(op.f('ck_payment_attempts_open_capture_has_amount'), 'payment_attempts',
                               "capture_point IS NULL OR capture_point = 'finished' OR capture_amount > 0")
    op.create_check_constraint(op.f('ck_payment_attempts_cancel_point_known'), 'payment_attempts',
                               "cancel_point IN ('requested', 'closed_at_provider', 'finished')")
    op.create_check_constraint(op.f('ck_payment_attempts_open_cancel_says_why'), 'payment_attempts',
                               "cancel_point IS NULL OR cancel_point = 'finished' OR cancel_code IS NOT NULL")
    op.create_check_constraint(op.f('ck_payment_attempts_give_back_point_known'), 'payment_attempts',
                               "give_back_point IN ('marked_duplicate', 'given_back', 'finished')")
    op.create_check_constraint(op.f('ck_payment_attempts_give_back_exactly_for_duplicates'), 'payment_attempts',
                               "(give_back_point IS NULL) = (duplicate_of IS NULL)")
    op.create_index('ix_payment_attempts_operations_unfinished', 'payment_attempts', ['updated_at'], unique=False,
                    postgresql_where=sa.text(UNFINISHED))


def downgrade() -> None:
    op.drop_index('ix_payment_attempts_operations_unfinished', table_name='payment_attempts',
                  postgresql_where=sa.text(UNFINISHED))
    for name in ('give_back_exactly_for_duplicates', 'give_back_point_known', 'open_cancel_says_why',
                 'cancel_point_known', 'open_capture_has_amount', 'capture_point_known'):
        op.drop_constraint(op.f(f'ck_payment_attempts_{name}'), 'payment_attempts', type_='check')
    for column in ('give_back_point', 'cancel_reason', 'cancel_code', 'cancel_point', 'capture_amount',
                   'capture_point'):
        op.drop_column('payment_attempts', column)
