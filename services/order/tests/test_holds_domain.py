"""The pure rules of held stock: when a holder's next order fits under the cap, and when the guest's short
hold becomes the full one; and while a customer may wait for the payment session that opens it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from handshake_order.domain import saga
from handshake_order.domain.holds import Hold, wait_before_holding
from handshake_order.domain.states import OrderState as S
from handshake_shared.events import order as o

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FULL = 900
ORDER = "00000000-0000-4000-8000-000000000003"


def placed(seconds_ago: int, units: int, short: int | None = 180, opened: bool = False) -> Hold:
    return Hold(
        units=units,
        placed_at=NOW - timedelta(seconds=seconds_ago),
        short_hold_seconds=short,
        payment_session_opened=opened,
    )


def test_an_order_that_fits_under_the_cap_waits_for_nothing() -> None:
    assert wait_before_holding([placed(10, 5)], 5, cap=10, full_hold_seconds=FULL, now=NOW) is None
    assert wait_before_holding([], 10, cap=10, full_hold_seconds=FULL, now=NOW) is None


def test_the_wait_is_until_enough_holds_lapse_soonest_first() -> None:
    holds = [
        placed(100, 4, opened=True),  # full hold: lapses in 800 s
        placed(30, 3),  # short hold: lapses in 150 s
        placed(60, 2, short=None),  # a customer's: lapses in 840 s
    ]
    # 9 held: one more unit needs the short hold to lapse, five more the opened one too
    assert wait_before_holding(holds, 1, cap=9, full_hold_seconds=FULL, now=NOW) == 150
    assert wait_before_holding(holds, 5, cap=9, full_hold_seconds=FULL, now=NOW) == 800
    assert wait_before_holding(holds, 9, cap=9, full_hold_seconds=FULL, now=NOW) == 840


def test_a_hold_past_its_time_but_not_yet_released_asks_for_a_second() -> None:
    assert wait_before_holding([placed(500, 5)], 5, cap=5, full_hold_seconds=FULL, now=NOW) == 1


def test_an_order_larger_than_the_cap_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        wait_before_holding([], 11, cap=10, full_hold_seconds=FULL, now=NOW)


def view(state: S = S.PAYMENT_PENDING, short: bool = True, opened: bool = False) -> saga.OrderView:
    return saga.OrderView(
        id=ORDER, state=state, total=100, currency="EUR", short_hold=short, payment_session_opened=opened
    )


def test_opening_the_payment_session_asks_for_the_full_hold_once() -> None:
    d = saga.open_payment_session(view(), 900)
    assert d.updates == {"payment_session_opened": True}
    assert d.emits == [o.OrderPaymentSessionOpened(order_id=ORDER, hold_seconds=900)]
    assert d.transitions == []
    assert not saga.open_payment_session(d.view, 900).changed


@pytest.mark.parametrize(
    ("state", "short"), [(S.PAID, True), (S.EXPIRED, True), (S.CANCELLED, True), (S.PAYMENT_PENDING, False)]
)
def test_an_order_without_a_short_hold_on_stock_asks_nothing(state: S, short: bool) -> None:
    assert not saga.open_payment_session(view(state, short), 900).changed


@pytest.mark.parametrize(
    ("state", "intent", "coming"),
    [
        (S.DRAFT, None, True),  # stock being reserved, payment asked or about to be
        (S.PAYMENT_PENDING, None, True),  # a new attempt's intent being created
        (S.PAYMENT_PENDING, "pi_1", False),  # it is there: ask payment for it
        (S.PAYMENT_FAILED, None, False),  # needs the customer to try again
        (S.CANCELLED, None, False),
        (S.EXPIRED, None, False),
        (S.NEEDS_REVIEW, None, False),
        (S.PAID, "pi_1", False),
    ],
)
def test_a_payment_session_is_worth_waiting_for_only_while_the_order_is_on_its_way_to_it(
    state: S, intent: str | None, coming: bool
) -> None:
    assert saga.payment_session_coming(state, intent) is coming
