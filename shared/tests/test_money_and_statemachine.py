from enum import StrEnum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_shared.money import CurrencyError, Money, basis_points_of
from handshake_shared.statemachine import InvalidTransition, TransitionTable

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


def test_money_refuses_mixing_currencies_and_unknown_codes():
    with pytest.raises(CurrencyError):
        Money(amount=1, currency="EUR") + Money(amount=1, currency="USD")
    with pytest.raises(ValueError):
        Money(amount=1, currency="XXX")
    assert (Money(amount=150, currency="eur") + Money(amount=50, currency="EUR")).amount == 200


def test_basis_points_round_half_up_in_integers():
    assert basis_points_of(4050, 1900) == 770  # 769.5
    assert basis_points_of(1, 5000) == 1  # 0.5
    assert basis_points_of(1, 4999) == 0


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=10_000))
def test_basis_points_never_exceed_the_amount_and_stay_within_half_a_unit(amount: int, bp: int):
    result = basis_points_of(amount, bp)
    assert 0 <= result <= amount
    assert abs(result * 10_000 - amount * bp) <= 5_000


class Light(StrEnum):
    RED = "red"
    GREEN = "green"
    YELLOW = "yellow"


def test_table_allows_only_declared_transitions():
    table = TransitionTable[Light](
        "light", {Light.RED: {Light.GREEN}, Light.GREEN: {Light.YELLOW}, Light.YELLOW: {Light.RED}}
    )
    table.check(Light.RED, Light.GREEN)
    with pytest.raises(InvalidTransition):
        table.check(Light.RED, Light.YELLOW)
    assert table.allowed(Light.GREEN) == {Light.YELLOW}
