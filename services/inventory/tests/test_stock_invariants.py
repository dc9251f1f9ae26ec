"""A hypothesis state machine drives random sequences of order facts, sweeps and stock counts through
the real consumer into real PostgreSQL, and after every step compares the database with a small
independent model and checks the invariants: per SKU available + reserved + sold equals what admins
counted in, no column is negative, the ledger sums to the stock, and reserved/sold are exactly the
lines of held/committed reservations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from handshake_inventory.db import reservation_lines, reservations, stock_items, stock_movements

T = TypeVar("T")
SKUS = 3
LAPSED = {"released", "expired", "restocked"}


@dataclass
class Model:
    """What the stock and each reservation must be, from the rules alone (no database)."""

    available: list[int] = field(default_factory=lambda: [0] * SKUS)
    reserved: list[int] = field(default_factory=lambda: [0] * SKUS)
    sold: list[int] = field(default_factory=lambda: [0] * SKUS)
    counted: list[int] = field(default_factory=lambda: [0] * SKUS)  # the total admins set, summed
    lines: dict[str, dict[int, int]] = field(default_factory=dict)
    state: dict[str, str | None] = field(default_factory=dict)  # None: rejected, no reservation

    def fits(self, lines: dict[int, int]) -> bool:
        return all(self.available[i] >= q for i, q in lines.items())

    def move(self, order: str, source: list[int], target: list[int]) -> None:
        for i, q in self.lines[order].items():
            source[i] -= q
            target[i] += q


def machine_for(inventory: Any, loop: asyncio.AbstractEventLoop) -> type[RuleBasedStateMachine]:
    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    class StockMachine(RuleBasedStateMachine):
        orders = Bundle("orders")

        def __init__(self) -> None:
            super().__init__()
            tag = uuid.uuid4().hex[:8]  # one database for every example: each example has its own SKUs
            self.skus = [f"{tag}-{i}" for i in range(SKUS)]
            self.model = Model()

        @initialize(counts=st.lists(st.integers(0, 8), min_size=SKUS, max_size=SKUS))
        def goods_received(self, counts: list[int]) -> None:
            for sku, available in enumerate(counts):
                self._count(sku, available)

        def _count(self, sku: int, available: int) -> None:
            run(inventory.set_stock(self.skus[sku], available))
            self.model.counted[sku] += available - self.model.available[sku]
            self.model.available[sku] = available

        # a recount rides along with an order (as a rule of its own it crowded out the saga steps)
        @rule(
            target=orders,
            lines=st.lists(st.tuples(st.integers(0, SKUS - 1), st.integers(1, 3)), min_size=1, max_size=3),
            recount=st.none() | st.tuples(st.integers(0, SKUS - 1), st.integers(0, 8)),
        )
        def place(self, lines: list[tuple[int, int]], recount: tuple[int, int] | None) -> str:
            if recount is not None:
                self._count(*recount)
            order = str(uuid.uuid4())
            merged: dict[int, int] = {}
            for i, q in lines:
                merged[i] = merged.get(i, 0) + q
            run(inventory.place(order, *((self.skus[i], q) for i, q in lines)))
            self.model.lines[order] = merged
            if self.model.fits(merged):
                self.model.state[order] = "held"
                self.model.move(order, self.model.available, self.model.reserved)
            else:
                self.model.state[order] = None
            return order

        @rule(order=orders, kind=st.sampled_from(["pay", "authorize"]), redeliver=st.booleans())
        def money(self, order: str, kind: str, redeliver: bool) -> None:
            event = run(getattr(inventory, kind)(order))
            if redeliver:
                assert run(inventory.deliver(event)) == "duplicate"
            m, state = self.model, self.model.state[order]
            if state == "held":
                m.move(order, m.reserved, m.sold)
                m.state[order] = "committed"
            elif state in LAPSED and m.fits(m.lines[order]):  # re-reserved and sold at once, or nothing
                m.move(order, m.available, m.sold)
                m.state[order] = "committed"

        @rule(order=orders, how=st.sampled_from(["ttl", "order_expired", "cancel"]))
        def lapse(self, order: str, how: str) -> None:
            m = self.model
            held = m.state[order] == "held"
            if how == "ttl":
                run(inventory.overdue(order))
                assert run(inventory.sweep()) == (1 if held else 0)
            elif how == "order_expired":
                run(inventory.expire(order))
            else:
                run(inventory.cancel(order, reason="customer cancelled"))
            if held:
                m.move(order, m.reserved, m.available)
                m.state[order] = "expired" if how == "ttl" else "released"
            elif how == "cancel" and m.state[order] == "committed":  # capture failed after the commit
                m.move(order, m.sold, m.available)
                m.state[order] = "restocked"

        @rule(order=orders, restock=st.booleans(), partial=st.booleans())
        def refund(self, order: str, restock: bool, partial: bool) -> None:
            run(inventory.refund(order, str(uuid.uuid4()), restock=restock, partial=partial))
            m = self.model
            if restock and m.state[order] == "committed":
                m.move(order, m.sold, m.available)
                m.state[order] = "restocked"

        @invariant()
        def stock_matches_the_model_and_is_conserved(self) -> None:
            db = run(read_stock(inventory, self.skus))
            m = self.model
            for i, sku in enumerate(self.skus):
                available, reserved, sold, ledger, held_lines, sold_lines = db[sku]
                assert (available, reserved, sold) == (m.available[i], m.reserved[i], m.sold[i]), sku
                assert available + reserved + sold == m.counted[i]
                assert min(available, reserved, sold) >= 0
                assert ledger == (available, reserved, sold)  # every unit explained by the ledger
                # reserved units are exactly the held reservations' lines, sold ones the committed ones'
                assert (reserved, sold) == (held_lines, sold_lines)

        @invariant()
        def reservations_match_the_model(self) -> None:
            states = run(read_states(inventory, list(self.model.state)))
            assert states == {o: s for o, s in self.model.state.items() if s is not None}

    return StockMachine


async def read_stock(inventory: Any, skus: list[str]) -> dict[str, tuple[int, ...]]:
    s, m, r, rl = stock_items.c, stock_movements.c, reservations.c, reservation_lines.c
    async with inventory.db.engine.connect() as conn:
        stock = {row.sku: row for row in await conn.execute(select(stock_items).where(s.sku.in_(skus)))}
        ledger = {
            row.sku: (int(row.a), int(row.r), int(row.s))
            for row in await conn.execute(
                select(
                    m.sku,
                    func.sum(m.delta_available).label("a"),
                    func.sum(m.delta_reserved).label("r"),
                    func.sum(m.delta_sold).label("s"),
                )
                .where(m.sku.in_(skus))
                .group_by(m.sku)
            )
        }
        by_state = {
            (row.sku, row.state): int(row.units)
            for row in await conn.execute(
                select(rl.sku, r.state, func.sum(rl.quantity).label("units"))
                .join(reservations, r.id == rl.reservation_id)
                .where(rl.sku.in_(skus))
                .group_by(rl.sku, r.state)
            )
        }
    return {
        sku: (
            stock[sku].available,
            stock[sku].reserved,
            stock[sku].sold,
            ledger.get(sku, (0, 0, 0)),
            by_state.get((sku, "held"), 0),
            by_state.get((sku, "committed"), 0),
        )
        for sku in skus
    }


async def read_states(inventory: Any, orders: list[str]) -> dict[str, str]:
    if not orders:
        return {}
    async with inventory.db.engine.connect() as conn:
        rows = await conn.execute(
            select(reservations.c.order_id, reservations.c.state).where(reservations.c.order_id.in_(orders))
        )
    return {row.order_id: row.state for row in rows}


async def test_random_sequences_of_saga_steps_never_create_lose_or_oversell_stock(inventory) -> None:
    machine = machine_for(inventory, asyncio.get_running_loop())
    # hypothesis is synchronous: it runs in a worker thread and hands each database step to this loop
    await asyncio.to_thread(
        run_state_machine_as_test,
        machine,
        settings=settings(
            max_examples=25, stateful_step_count=15, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
