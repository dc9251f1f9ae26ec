"""Pure domain: the reservation lifecycle table and the stock rules. No I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_inventory.domain.reservations import LAPSED, MOVEMENTS, RESERVATION_LIFECYCLE, UNITS_IN
from handshake_inventory.domain.reservations import ReservationState as R
from handshake_inventory.domain.stock import Deltas, MovementKind, ShortageReason, merge_lines, shortages, transfer
from handshake_shared.statemachine import InvalidTransition

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


@pytest.mark.parametrize("target", [R.COMMITTED, R.RELEASED, R.EXPIRED])
def test_a_held_reservation_can_be_committed_released_or_expired(target: R) -> None:
    assert RESERVATION_LIFECYCLE.can(R.HELD, target)


def test_the_table_covers_every_state_and_nothing_returns_to_held() -> None:
    assert RESERVATION_LIFECYCLE.states() == set(R) == set(UNITS_IN)
    assert all(not RESERVATION_LIFECYCLE.can(s, R.HELD) for s in R)


@pytest.mark.parametrize("lapsed", sorted(LAPSED))
def test_a_lapsed_reservation_can_only_be_committed_and_only_by_reserving_again(lapsed: R) -> None:
    # money is truth: a late payment may still buy the lines, but only from available stock
    assert {R.RELEASED, R.EXPIRED, R.RESTOCKED} == LAPSED
    assert RESERVATION_LIFECYCLE.allowed(lapsed) == {R.COMMITTED}
    assert MOVEMENTS[(lapsed, R.COMMITTED)] == (MovementKind.RESERVE, MovementKind.COMMIT)


def test_only_a_committed_reservation_is_restocked_and_a_sold_one_is_never_released() -> None:
    assert {s for s in R if RESERVATION_LIFECYCLE.can(s, R.RESTOCKED)} == {R.COMMITTED}
    assert RESERVATION_LIFECYCLE.allowed(R.COMMITTED) == {R.RESTOCKED}
    for target in (R.RELEASED, R.EXPIRED, R.COMMITTED):
        with pytest.raises(InvalidTransition):
            RESERVATION_LIFECYCLE.check(R.COMMITTED, target)  # its units are sold, not reserved


ALLOWED = sorted((s, t) for s in R for t in RESERVATION_LIFECYCLE.allowed(s))


@pytest.mark.parametrize(("current", "target"), ALLOWED)
@given(quantity=st.integers(min_value=1, max_value=1000))
def test_each_transition_moves_the_units_to_where_its_target_state_keeps_them(
    current: R, target: R, quantity: int
) -> None:
    # the reservation's units start where `current` keeps them (available when it holds nothing);
    # the transition's movements must take them exactly to where `target` keeps them, never below zero
    columns = {"available": 0, "reserved": 0, "sold": 0}
    columns[UNITS_IN[current] or "available"] = quantity
    for kind in MOVEMENTS[(current, target)]:
        d = transfer(kind, quantity)
        columns = {
            "available": columns["available"] + d.available,
            "reserved": columns["reserved"] + d.reserved,
            "sold": columns["sold"] + d.sold,
        }
        assert min(columns.values()) >= 0, (current, target, kind)
    expected = {"available": 0, "reserved": 0, "sold": 0}
    expected[UNITS_IN[target] or "available"] = quantity
    assert columns == expected


def test_every_allowed_transition_declares_its_movements() -> None:
    assert set(MOVEMENTS) == set(ALLOWED)


@pytest.mark.parametrize("kind", [k for k in MovementKind if k != MovementKind.ADJUST])
@given(quantity=st.integers(min_value=1, max_value=10_000))
def test_saga_movements_only_move_units_between_columns(kind: MovementKind, quantity: int) -> None:
    d = transfer(kind, quantity)
    assert d.available + d.reserved + d.sold == 0
    assert sorted([d.available, d.reserved, d.sold]) == [-quantity, 0, quantity]


def test_reserve_takes_from_available_commit_sells_release_returns_restock_unsells() -> None:
    assert transfer(MovementKind.RESERVE, 3) == Deltas(available=-3, reserved=3, sold=0)
    assert transfer(MovementKind.COMMIT, 3) == Deltas(available=0, reserved=-3, sold=3)
    assert transfer(MovementKind.RELEASE, 3) == Deltas(available=3, reserved=-3, sold=0)
    assert transfer(MovementKind.EXPIRE, 3) == Deltas(available=3, reserved=-3, sold=0)
    assert transfer(MovementKind.RESTOCK, 3) == Deltas(available=3, reserved=0, sold=-3)
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
