from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_order.domain.pricing import Coupon, PricingError, Product, RequestedLine, price

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

NOW = datetime(2026, 11, 22, tzinfo=UTC)
CATALOGUE = {
    "MUG": Product("MUG", "Mug", 1250, "EUR"),
    "TEE": Product("TEE", "T-shirt", 2000, "EUR"),
    "USD-HAT": Product("USD-HAT", "Hat", 900, "USD"),
    "OLD": Product("OLD", "Retired", 100, "EUR", active=False),
}


def quote(lines, coupon=None, tax=1900, shipping=(495, "EUR")):
    return price(
        [RequestedLine(*line) for line in lines],
        CATALOGUE,
        region="DE",
        tax_rate_bp=tax,
        shipping_method="standard",
        shipping_amount=shipping,
        coupon=coupon,
        now=NOW,
    )


def test_total_is_discounted_subtotal_plus_tax_plus_shipping():
    snap = quote([("MUG", 2), ("TEE", 1)], Coupon("TEN", "percent", percent_bp=1000))
    assert snap.subtotal == 4500
    assert snap.discount == 450
    assert snap.tax == 770  # 19 % of 4050 = 769.5, rounded half up
    assert snap.total == 4050 + 770 + 495
    assert [(line.sku, line.unit_price, line.quantity) for line in snap.lines] == [("MUG", 1250, 2), ("TEE", 2000, 1)]


def test_repeated_skus_are_merged_into_one_line():
    snap = quote([("MUG", 1), ("MUG", 2)])
    assert [(line.sku, line.quantity, line.line_total) for line in snap.lines] == [("MUG", 3, 3750)]


def test_fixed_coupon_never_takes_goods_below_zero():
    snap = quote([("MUG", 1)], Coupon("BIG", "fixed", amount_off=99_999, currency="EUR"))
    assert snap.discount == 1250
    assert snap.tax == 0
    assert snap.total == 495


@pytest.mark.parametrize(
    ("coupon", "code"),
    [
        (Coupon("OLD", "percent", percent_bp=1000, expires_at=NOW - timedelta(seconds=1)), "coupon-expired"),
        (Coupon("USED", "percent", percent_bp=1000, max_redemptions=5, redemptions=5), "coupon-exhausted"),
        (Coupon("OFF", "percent", percent_bp=1000, active=False), "coupon-inactive"),
        (Coupon("USD", "fixed", amount_off=100, currency="USD"), "coupon-currency"),
    ],
)
def test_unusable_coupons_fail_the_quote(coupon, code):
    with pytest.raises(PricingError) as err:
        quote([("MUG", 1)], coupon)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("lines", "code", "kw"),
    [
        ([], "empty-cart", {}),
        ([("NOPE", 1)], "unknown-sku", {}),
        ([("OLD", 1)], "unknown-sku", {}),
        ([("MUG", 1), ("USD-HAT", 1)], "mixed-currency", {}),
        ([("MUG", 1)], "unknown-region", {"tax": None}),
        ([("MUG", 1)], "unknown-shipping", {"shipping": None}),
        ([("MUG", 1)], "mixed-currency", {"shipping": (500, "USD")}),
    ],
)
def test_orders_that_cannot_be_priced_are_refused(lines, code, kw):
    with pytest.raises(PricingError) as err:
        quote(lines, **kw)
    assert err.value.code == code


@given(
    st.lists(st.tuples(st.sampled_from(["MUG", "TEE"]), st.integers(1, 50)), min_size=1, max_size=6),
    st.integers(0, 10_000),
    st.integers(1, 10_000),
)
def test_snapshot_arithmetic_always_adds_up(lines, tax_bp, coupon_bp):
    snap = quote(lines, Coupon("C", "percent", percent_bp=coupon_bp), tax=tax_bp)
    assert snap.subtotal == sum(line.unit_price * line.quantity for line in snap.lines)
    assert 0 <= snap.discount <= snap.subtotal
    assert snap.total == snap.subtotal - snap.discount + snap.tax + snap.shipping
    assert all(isinstance(v, int) for v in (snap.subtotal, snap.discount, snap.tax, snap.total))
