"""Migration steps every service shares. Versioned by name and frozen: a later change to the messaging
tables is a new function (v2) called from a new migration, never an edit of this one."""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql


def create_messaging_tables_v1() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.Column("message_key", sa.Text(), nullable=True),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        comment="Messages a consumer gave up on after bounded retries; also published to <topic>.dlq.",
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_inbox")),
        comment="Every consumed event id, written in the same transaction as its effects: a redelivery finds it and does nothing.",
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("message_key", sa.Text(), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
        comment="Events committed with the state change that caused them, waiting for the relay to publish.",
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["bucket", "id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "outbox_sequences",
        sa.Column("aggregate_id", sa.Text(), nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("aggregate_id", name=op.f("pk_outbox_sequences")),
        comment="Per-order event sequence of this service; the row lock also orders concurrent writers.",
    )


def drop_messaging_tables_v1() -> None:
    op.drop_table("outbox_sequences")
    op.drop_index("ix_outbox_unpublished", table_name="outbox", postgresql_where=sa.text("published_at IS NULL"))
    op.drop_table("outbox")
    op.drop_table("inbox")
    op.drop_table("dead_letters")


def add_outbox_parking_v2() -> None:
    """A row the broker keeps refusing holds back only its own key, with a backoff, and is parked after
    bounded attempts until an admin releases it (audited). Nullable columns without a default: no rewrite."""
    op.add_column("outbox", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_outbox_held",
        "outbox",
        ["message_key"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL AND (next_attempt_at IS NOT NULL OR parked_at IS NOT NULL)"),
    )
    op.create_table(
        "outbox_releases",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_releases")),
        comment="Audit trail of parked outbox rows an admin released for another publish attempt.",
    )


def drop_outbox_parking_v2() -> None:
    op.drop_table("outbox_releases")
    op.drop_index(
        "ix_outbox_held",
        table_name="outbox",
        postgresql_where=sa.text("published_at IS NULL AND (next_attempt_at IS NOT NULL OR parked_at IS NOT NULL)"),
    )
    op.drop_column("outbox", "parked_at")
    op.drop_column("outbox", "next_attempt_at")


def add_retention_and_redrive_v3() -> None:
    """An index for deleting old inbox rows in batches, and the audit of dead-letter redrives. The index is
    built CONCURRENTLY (outside the migration's transaction): the inbox may be large and is written by every
    consumed event, which a plain CREATE INDEX would block for the length of the build."""
    op.create_table(
        "dead_letter_redrives",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("dead_letter_id", sa.BigInteger(), nullable=False),
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("redriven_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter_redrives")),
        sa.UniqueConstraint("dead_letter_id", name=op.f("uq_dead_letter_redrives_dead_letter_id")),
        comment="Audit trail of dead letters an admin redrove through their consumer's handler, at most once each.",
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_inbox_processed_at",
            "inbox",
            ["processed_at"],
            unique=False,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def drop_retention_and_redrive_v3() -> None:
    op.drop_index("ix_inbox_processed_at", table_name="inbox")
    op.drop_table("dead_letter_redrives")
