"""Pure domain: the reservation lifecycle table and the stock rules. No I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_inventory.domain.reservations import RESERVATION_LIFECYCLE
from handshake_inventory.domain.reservations import ReservationState as R
from handshake_inventory.domain.stock import Deltas, MovementKind, ShortageReason, merge_lines, shortages, transfer
from handshake_shared.statemachine import InvalidTransition


@pytest.mark.parametrize("target", [R.COMMITTED, R.RELEASED, R.EXPIRED])
def test_a_held_reservation_can_be_committed_released_or_expired(target: R) -> None:
    assert RESERVATION_LIFECYCLE.can(R.HELD, target)


@pytest.mark.parametrize("done", [R.COMMITTED, R.RELEASED, R.EXPIRED])
def test_a_reservation_leaves_held_only_once(done: R) -> None:
    # a released reservation can never be committed (that would sell unreserved stock), nor a sold one released
    assert RESERVATION_LIFECYCLE.is_terminal(done)
    for target in R:
        assert not RESERVATION_LIFECYCLE.can(done, target)
        with pytest.raises(InvalidTransition):
            RESERVATION_LIFECYCLE.check(done, target)


def test_the_table_covers_every_state_and_nothing_returns_to_held() -> None:
    assert RESERVATION_LIFECYCLE.states() == set(R)
    assert not RESERVATION_LIFECYCLE.can(R.HELD, R.HELD)
    assert all(not RESERVATION_LIFECYCLE.can(s, R.HELD) for s in R)


@pytest.mark.parametrize("kind", [MovementKind.RESERVE, MovementKind.COMMIT, MovementKind.RELEASE, MovementKind.EXPIRE])
@given(quantity=st.integers(min_value=1, max_value=10_000))
def test_saga_movements_only_move_units_between_columns(kind: MovementKind, quantity: int) -> None:
    d = transfer(kind, quantity)
    assert d.available + d.reserved + d.sold == 0
    assert sorted([d.available, d.reserved, d.sold]) == [-quantity, 0, quantity]


def test_reserve_takes_from_available_commit_sells_release_returns() -> None:
    assert transfer(MovementKind.RESERVE, 3) == Deltas(available=-3, reserved=3, sold=0)
    assert transfer(MovementKind.COMMIT, 3) == Deltas(available=0, reserved=-3, sold=3)
    assert transfer(MovementKind.RELEASE, 3) == Deltas(available=3, reserved=-3, sold=0)
    with pytest.raises(ValueError):
        transfer(MovementKind.ADJUST, 3)  # an adjustment is not a transfer: only admins create or remove units
    with pytest.raises(ValueError):
        transfer(MovementKind.RESERVE, 0)


def test_duplicate_lines_are_merged_and_sorted_into_lock_order() -> None:
    assert list(merge_lines([("TEE", 1), ("MUG", 2), ("TEE", 3)]).items()) == [("MUG", 2), ("TEE", 4)]


def test_shortages_name_every_line_that_does_not_fit_with_its_reason() -> None:
    result = shortages({"MUG": 2, "TEE": 5, "GHOST": 1}, {"MUG": 2, "TEE": 4})
    assert [(s.sku, s.requested, s.available, s.reason) for s in result] == [
        ("GHOST", 1, 0, ShortageReason.UNKNOWN_SKU),
        ("TEE", 5, 4, ShortageReason.INSUFFICIENT_STOCK),
    ]


skus = st.sampled_from(["A", "B", "C", "D", "E"])


@given(
    requested=st.dictionaries(skus, st.integers(min_value=1, max_value=20), min_size=1),
    available=st.dictionaries(skus, st.integers(min_value=0, max_value=20)),
)
def test_an_order_fits_exactly_when_every_line_fits(requested: dict[str, int], available: dict[str, int]) -> None:
    short = shortages(requested, available)
    assert {s.sku for s in short} == {sku for sku, q in requested.items() if available.get(sku, -1) < q}
    if not short:
        # the all-or-nothing plan is only applied when applying it leaves nothing negative
        assert all(available[sku] - q >= 0 for sku, q in requested.items())
