"""The console's pure rules: the summary line's wording, money in the currency's exponent, search routing,
sparklines. (Counters across pods: test_replica_figures.py.)"""

from __future__ import annotations

import pytest

from handshake_console.domain.charts import sparkline_points
from handshake_console.domain.money import AmountError, format_money, parse_amount
from handshake_console.domain.search import classify
from handshake_console.domain.summary import summary_line

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


def order(
    state: str, *, total: int = 5743, captured: int = 0, refunded: int = 0, pending: int = 0, currency: str = "EUR"
) -> dict[str, object]:
    return {
        "state": state,
        "total": total,
        "currency": currency,
        "captured_amount": captured,
        "refunded_amount": refunded,
        "refund_pending_amount": pending,
    }


@pytest.mark.parametrize(
    ("given", "line"),
    [
        (
            order("fulfillment_pending", captured=5743),
            "Charged 57.43 EUR · fulfilment pending · nothing refunded · next: ship the order",
        ),
        (
            order("payment_pending"),
            "Not charged yet (57.43 EUR due) · waiting for the customer to pay · nothing refunded · "
            "next: the customer pays, or the reservation expires",
        ),
        (
            order("payment_authorized"),
            "Authorised 57.43 EUR, not charged yet · payment authorised, not captured · nothing refunded · "
            "next: payment captures the authorised amount",
        ),
        (
            order("partially_refunded", captured=5743, refunded=1000),
            "Charged 57.43 EUR · partly refunded · refunded 10.00 EUR of 57.43 EUR · next: ship or refund the rest",
        ),
        (
            order("refunded", captured=5743, refunded=5743),
            "Charged 57.43 EUR · refunded · refunded in full (57.43 EUR) · "
            "next: nothing; all money is back with the customer",
        ),
        (
            order("fulfillment_pending", captured=5743, pending=500),
            "Charged 57.43 EUR · fulfilment pending · refund of 5.00 EUR pending · "
            "next: the provider confirms the pending refund",
        ),
        (
            order("expired"),
            "Nothing charged · expired before payment · nothing refunded · next: nothing; the stock went back",
        ),
        (
            order("needs_review", captured=5743),
            "Charged 57.43 EUR · needs review · nothing refunded · next: finance closes the review",
        ),
        (
            order("fulfilled", total=1200, captured=1200, currency="JPY"),
            "Charged 1200 JPY · shipped · nothing refunded · next: nothing; the order is complete",
        ),
    ],
)
def test_summary_line_wording(given: dict[str, object], line: str) -> None:
    assert summary_line(given) == line


def test_money_still_held_on_a_finished_order_is_the_next_step() -> None:
    line = summary_line(order("cancelled", captured=5743, refunded=1000))
    assert line.endswith("next: refund the 47.43 EUR still held")


def test_summary_never_invents_money_from_missing_figures() -> None:
    assert summary_line({"state": "fulfillment_pending"}).startswith("Nothing charged · fulfilment pending")


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (5743, "EUR", "57.43 EUR"),
        (5, "eur", "0.05 EUR"),
        (-250, "USD", "-2.50 USD"),
        (1200, "JPY", "1200 JPY"),
        (0, "GBP", "0.00 GBP"),
        (1234, "XYZ", "1234 minor units XYZ"),
        (None, "EUR", "—"),
    ],
)
def test_format_money_uses_the_currencys_exponent(amount: int | None, currency: str, shown: str) -> None:
    assert format_money(amount, currency) == shown


def test_parse_amount_reads_major_units_exactly() -> None:
    assert parse_amount("12.5", "EUR") == 1250
    assert parse_amount("12,50", "EUR") == 1250
    assert parse_amount(" 7 ", "JPY") == 7
    for text, currency in (
        ("1.234", "EUR"),
        ("7.5", "JPY"),
        ("0", "EUR"),
        ("-1", "EUR"),
        ("1e3", "EUR"),
        ("", "EUR"),
        ("10", "XYZ"),
    ):
        with pytest.raises(AmountError):
            parse_amount(text, currency)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("0B0E5F8E-4C1A-4D55-9A53-2B7C1F0A9D11", "order_id", "0b0e5f8e-4c1a-4d55-9a53-2b7c1f0a9d11"),
        ("hs-0b0e5f8e", "reference", "HS-0B0E5F8E"),
        ("pi_3Nabc", "payment_intent", "pi_3Nabc"),
        ("evt_1Xyz", "provider_event", "evt_1Xyz"),
        (" Kim@Example.COM ", "email", "kim@example.com"),
        ("cus_42", "customer_id", "cus_42"),
        ("   ", "empty", ""),
    ],
)
def test_search_box_routing(text: str, kind: str, value: str) -> None:
    query = classify(text)
    assert (query.kind, query.value) == (kind, value)


def test_sparkline_scales_into_the_box_and_skips_gaps() -> None:
    assert sparkline_points([]) == ""
    points = sparkline_points([0, 10, None, 5], width=32, height=12, pad=1)
    assert points == "1.0,11.0 11.0,1.0 31.0,6.0"
