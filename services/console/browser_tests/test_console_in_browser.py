"""Staff at work in the console, in a real browser, against the whole system: what they see on the pages and
what the services and the Stripe emulator then hold."""

from __future__ import annotations

from typing import Any


def test_support_finds_the_demo_order_by_reference_and_refunds_part_of_it_once(
    staff: Any, shop: Any, demo_order: dict[str, Any], order_api: Any
) -> None:
    oid, intent = demo_order["order_id"], demo_order["payment_intent_id"]
    placed = order_api(oid)
    # the `make run` demo: 2 x 12.50 + 24.00, WELCOME10, 19 % German tax, 4.95 shipping
    assert (placed["total"], placed["currency"], placed["captured_amount"]) == (5743, "EUR", 5743)

    staff.sign_in("sam")
    staff.shot("signed in as support")
    staff.search(placed["reference"])
    staff.shot("search by reference opens the order")
    assert staff.driver.current_url == f"{staff.url}/orders/{oid}"
    assert placed["reference"] in staff.title()
    assert staff.summary() == "Charged 57.43 EUR · fulfilment pending · nothing refunded · next: ship the order"

    form = staff.form("refund")
    staff.fill(form, amount="12.50", reason="one mug arrived broken")
    staff.shot("refund form filled")
    staff.submit(form)
    staff.shot("refund accepted")
    assert staff.result() == "Done (202)."

    def refunded() -> bool:
        return "succeeded" in staff.panel("Refunds").text

    staff.wait_page(f"/orders/{oid}", refunded, "the refund going through")
    staff.shot("order shows the refund")
    row = staff.panel("Refunds").find_element("css selector", "tbody tr").text
    assert row.startswith("12.50 EUR succeeded one mug arrived broken sam"), row
    assert staff.summary().startswith("Charged 57.43 EUR · ")
    assert "refunded 12.50 EUR of 57.43 EUR" in staff.summary()

    at_stripe = shop.refunds_for(intent)
    assert [(r.amount, r.currency, r.status) for r in at_stripe] == [(1250, "eur", "succeeded")]
    after = order_api(oid)
    assert (after["captured_amount"], after["refunded_amount"]) == (5743, 1250)
    assert [(r["amount"], r["requested_by"], r["state"]) for r in after["refunds"]] == [(1250, "sam", "succeeded")]
