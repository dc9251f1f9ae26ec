"""The migrations that put recovery points on the rows (0009: intent creation and refunds; 0010: capture,
cancel and giving back a duplicate) give the rows already in flight the point their columns imply, so the
release that reads the points resumes them where the release before left them. Run against real PostgreSQL:
a database at the revision before 0009 gets rows in every shape, then is upgraded to head."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from handshake_shared.db import async_url
from handshake_shared.migrations import alembic_config

MIGRATIONS = "handshake_payment.migrations"


async def migrate(url: str, revision: str) -> None:
    # alembic runs its own event loop (handshake_shared.migrations.run_env): off this one
    await asyncio.to_thread(command.upgrade, alembic_config(MIGRATIONS, url), revision)


class Rows:
    """Rows written as the release before 0009 wrote them (its columns only)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def attempt(self, order_id: uuid.UUID, state: str, **columns: Any) -> uuid.UUID:
        attempt_id = uuid.uuid4()
        values = {
            "id": attempt_id,
            "order_id": order_id,
            "request_id": str(uuid.uuid4()),
            "amount": 5000,
            "currency": "EUR",
            "state": state,
            **columns,
        }
        await self.insert("payment_attempts", values)
        return attempt_id

    async def refund(self, attempt_id: uuid.UUID, order_id: uuid.UUID, state: str, **columns: Any) -> uuid.UUID:
        refund_id = uuid.uuid4()
        values = {
            "id": refund_id,
            "order_id": order_id,
            "attempt_id": attempt_id,
            "amount": 5000,
            "currency": "EUR",
            "reason": "customer_request",
            "state": state,
            **columns,
        }
        await self.insert("refunds", values)
        return refund_id

    async def insert(self, table: str, values: dict[str, Any]) -> None:
        # plain SQL: the table as it was at that revision, not as the models describe it now
        names = ", ".join(values)
        await self.conn.execute(
            text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + n for n in values)})"), values
        )


async def test_rows_in_flight_take_the_recovery_points_their_columns_imply(stack) -> None:
    url = stack.postgres.create_database(f"t_payment_points_{uuid.uuid4().hex[:10]}")
    await migrate(url, "0008")
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            rows = Rows(conn)
            # intent creation: not yet stored, stored but not announced, announced
            intent_not_stored = await rows.attempt(uuid.uuid4(), "creating")
            intent_stored = await rows.attempt(uuid.uuid4(), "creating", provider_intent_id="pi_stored")
            announced = await rows.attempt(uuid.uuid4(), "requires_payment", provider_intent_id="pi_announced")
            # refunds of a capture: recorded, refunded at the provider but not recorded, finished
            paid_order = uuid.uuid4()
            paid = await rows.attempt(paid_order, "succeeded", provider_intent_id="pi_paid", amount_captured=5000)
            refund_recorded = await rows.refund(paid, paid_order, "requested")
            refund_at_provider = await rows.refund(paid, paid_order, "requested", provider_refund_id="re_made")
            refund_finished = await rows.refund(paid, paid_order, "succeeded", provider_refund_id="re_done")
            # capture: held, refused and released
            held = await rows.attempt(uuid.uuid4(), "authorized", provider_intent_id="pi_held")
            capture_refused = await rows.attempt(
                uuid.uuid4(), "capture_failed", provider_intent_id="pi_refused", failure_code="amount_too_large"
            )
            # an order that expired half-way through its cancel: the attempt without an intent was cancelled
            # (that committed first), the open intents not yet; a payment that landed first is no cancel's
            closed_order = uuid.uuid4()
            never_created = await rows.attempt(
                closed_order, "canceled", failure_code="order_expired", failure_message="reservation expired"
            )
            still_open = await rows.attempt(closed_order, "requires_payment", provider_intent_id="pi_open")
            declined = await rows.attempt(
                closed_order, "failed", provider_intent_id="pi_declined", failure_code="card_declined"
            )
            landed = await rows.attempt(closed_order, "succeeded", provider_intent_id="pi_landed", amount_captured=5000)
            # duplicates of one order's payment, in every shape of giving their money back
            order = uuid.uuid4()
            holder = await rows.attempt(order, "succeeded", provider_intent_id="pi_holder", amount_captured=5000)
            dup = {"duplicate_of": holder}
            held_duplicate = await rows.attempt(order, "authorized", provider_intent_id="pi_d1", **dup)
            released_duplicate = await rows.attempt(
                order, "canceled", provider_intent_id="pi_d2", failure_code="duplicate_authorization", **dup
            )
            captured = {"amount_captured": 5000, **dup}
            unrefunded = await rows.attempt(order, "succeeded", provider_intent_id="pi_d3", **captured)
            refunded_unrecorded = await rows.attempt(order, "succeeded", provider_intent_id="pi_d4", **captured)
            refunded = await rows.attempt(order, "succeeded", provider_intent_id="pi_d5", **captured)
            automatic = {"automatic": True, "reason": "duplicate_capture"}
            await rows.refund(unrefunded, order, "requested", **automatic)
            await rows.refund(refunded_unrecorded, order, "requested", provider_refund_id="re_d4", **automatic)
            await rows.refund(refunded, order, "succeeded", provider_refund_id="re_d5", **automatic)

        await migrate(url, "head")

        async with engine.connect() as conn:
            attempts = {
                r.id: r
                for r in await conn.execute(
                    text(
                        "SELECT id, recovery_point, capture_point, cancel_point, cancel_code, cancel_reason, "
                        "give_back_point FROM payment_attempts"
                    )
                )
            }
            refunds = {
                r.id: r.recovery_point for r in await conn.execute(text("SELECT id, recovery_point FROM refunds"))
            }
    finally:
        await engine.dispose()

    assert {a: attempts[a].recovery_point for a in (intent_not_stored, intent_stored, announced)} == {
        intent_not_stored: "recorded",
        intent_stored: "intent_stored",
        announced: "finished",
    }
    assert refunds[refund_recorded] == "recorded"
    assert refunds[refund_at_provider] == "provider_refunded"
    assert refunds[refund_finished] == "finished"
    assert {a: attempts[a].capture_point for a in (held, capture_refused, paid)} == {
        held: None,  # a capture in flight is not on the row: its request is redelivered
        capture_refused: "finished",
        paid: None,
    }
    closed = {a: attempts[a] for a in (never_created, still_open, declined, landed)}
    assert {a: r.cancel_point for a, r in closed.items()} == {
        never_created: "finished",
        still_open: "requested",
        declined: "requested",
        landed: None,
    }
    for open_intent in (still_open, declined):
        assert (closed[open_intent].cancel_code, closed[open_intent].cancel_reason) == (
            "order_expired",
            "reservation expired",
        )
    assert attempts[released_duplicate].cancel_point is None  # released as a duplicate, not by a closed order
    assert {
        a: attempts[a].give_back_point
        for a in (holder, held_duplicate, released_duplicate, unrefunded, refunded_unrecorded, refunded)
    } == {
        holder: None,
        held_duplicate: "marked_duplicate",
        released_duplicate: "finished",
        unrefunded: "marked_duplicate",
        refunded_unrecorded: "given_back",
        refunded: "finished",
    }
