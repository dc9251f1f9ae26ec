"""Staff at work in the console, in a real browser, against the whole system: what they see on the pages and
what the services and the Stripe emulator then hold."""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from handshake_devstack.system import wait_for


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


def test_a_refund_above_the_support_limit_waits_for_finance_and_is_made_once_by_someone_else(
    staff: Any, shop: Any, checkout: Any, order_api: Any, as_staff: Any, http: Any
) -> None:
    # 4 T-shirts to Germany: 96.00 + 18.24 tax + 4.95 shipping, more than support's 100.00 per order
    order = checkout([{"sku": "HS-TEE", "quantity": 4}])
    oid, intent = order["order_id"], order["payment_intent_id"]
    assert order_api(oid)["total"] == 11919

    staff.sign_in("sam")
    staff.order(oid)
    form = staff.form("request_approval")
    staff.fill(form, amount="110.00", reason="parcel lost by the carrier")
    staff.submit(form)
    staff.shot("support asks finance to approve")
    assert staff.result() == "Done (202)."
    assert "pending" in staff.text("main dl")
    [approval] = order_api(oid)["refund_approvals"]
    assert (approval["amount"], approval["state"], approval["requested_by"]) == (11000, "pending", "sam")
    approval_id = approval.get("approval_id") or approval["id"]
    assert shop.refunds_for(intent) == [], "nothing is refunded before finance decides"

    # the requester forces the greyed-out approve button: the order service refuses, and says so on the page
    staff.navigating(lambda: staff.driver.find_element("link text", "Approvals").click())
    row = staff.find(f"tr:has(a[href='/orders/{oid}'])")
    assert "sam" in row.text and "110.00 EUR" in row.text
    staff.shot("approvals queue as support")
    approve = row.find_element("css selector", "form[action$='/approve']")
    staff.fill(approve, reason="approving my own request")
    staff.submit(approve, force=True)
    staff.shot("support's forced approval refused")
    assert staff.result() == "Refused by the service: 403 Forbidden"
    assert "requires one of the roles: finance" in staff.text()
    # and were the requester finance too, the four-eyes rule would still refuse them
    own = http.post(
        f"{shop.system.url('order')}/v1/admin/refund-approvals/{approval_id}/approve",
        json={"reason": "approving my own request"},
        headers={**as_staff("sam", ["support", "finance"]), "Idempotency-Key": "four-eyes"},
    )
    assert (own.status_code, own.json()["type"].rsplit("/", 1)[-1]) == (403, "four-eyes"), own.text
    assert order_api(oid)["refund_approvals"][0]["state"] == "pending"
    assert shop.refunds_for(intent) == []

    staff.sign_in("fran")
    staff.open("/approvals")
    row = staff.find(f"tr:has(a[href='/orders/{oid}'])")
    approve = row.find_element("css selector", "form[action$='/approve']")
    staff.fill(approve, reason="carrier confirmed the loss")
    staff.shot("finance approves")
    staff.submit(approve)
    staff.shot("approved")
    assert staff.result() == "Done (200)."

    staff.wait_page(f"/orders/{oid}", lambda: "succeeded" in staff.panel("Refunds").text, "the approved refund")
    staff.shot("order shows the approved refund and both names")
    refunds = staff.panel("Refunds").text
    assert "110.00 EUR succeeded parcel lost by the carrier sam / fran" in refunds
    assert "110.00 EUR · approved · asked by sam · fran: carrier confirmed the loss" in refunds
    # the audit: each line's time and actor, then what they did
    audit = staff.panel("Staff notes and audit").text.splitlines()
    assert [line.split(" · ")[-1] for line in audit[-4::2]] == ["staff:sam", "staff:fran"], audit
    assert audit[-3::2] == [
        "refund-approval-requested: 11000 EUR: parcel lost by the carrier",
        "refund-approval-approved: carrier confirmed the loss",
    ], audit
    staff.open("/approvals?state=approved")
    staff.shot("approved requests")
    decided = staff.find(f"tr:has(a[href='/orders/{oid}'])").text
    assert "sam" in decided and "fran: carrier confirmed the loss" in decided

    at_stripe = shop.refunds_for(intent)
    assert [(r.amount, r.status) for r in at_stripe] == [(11000, "succeeded")]
    after = order_api(oid)
    assert [(r["amount"], r["requested_by"], r["approved_by"]) for r in after["refunds"]] == [(11000, "sam", "fran")]
    assert (after["refund_approvals"][0]["state"], after["refund_approvals"][0]["decided_by"]) == ("approved", "fran")


def _provider_facts(shop: Any, provider_type: str) -> dict[str, float]:
    """Payment's count of provider events it took in, by outcome, for one Stripe event type."""
    text = shop.http.get(shop.system.url("payment") + "/metrics").text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "handshake_payment_provider_events_total" and sample.labels.get("type") == provider_type:
                counts[sample.labels["outcome"]] = sample.value
    return counts


def test_a_replayed_webhook_is_counted_on_the_page_and_charges_nobody_twice(
    staff: Any, shop: Any, checkout: Any, order_api: Any
) -> None:
    order = checkout([{"sku": "HS-CAP", "quantity": 1}])
    oid, intent = order["order_id"], order["payment_intent_id"]
    before = order_api(oid)
    # a cap to Germany: 18.00 + 3.42 tax + 4.95 shipping
    assert (before["total"], before["captured_amount"]) == (2637, 2637)
    facts_before = _provider_facts(shop, "payment_intent.succeeded")

    staff.sign_in("sam")
    staff.order(oid)
    webhooks = staff.panel("Webhooks from the provider")
    succeeded = next(
        li for li in webhooks.find_elements("css selector", "li") if li.text.startswith("payment_intent.succeeded")
    )
    assert "1 delivery" in succeeded.text and "replayed by" not in succeeded.text
    event_id = succeeded.find_element("css selector", "code").text
    staff.shot("webhooks before the replay")
    form = succeeded.find_element("css selector", "form")
    staff.fill(form, reason="customer says the shop never saw the payment")
    staff.submit(form)
    staff.shot("replay accepted")
    assert staff.result() == "Done (202)."

    # payment took the replayed event in (and changed nothing: it had applied it already)
    def taken_in() -> dict[str, float] | None:
        now = _provider_facts(shop, "payment_intent.succeeded")
        return now if sum(now.values()) == sum(facts_before.values()) + 1 else None

    facts_after = wait_for(taken_in, 20.0)
    assert facts_after.get("applied", 0) == facts_before.get("applied", 0)

    staff.order(oid)
    staff.shot("order after the replay")
    replayed = next(
        li
        for li in staff.panel("Webhooks from the provider").find_elements("css selector", "li")
        if event_id in li.text
    )
    assert replayed.text.count("replayed by sam") == 1
    assert "customer says the shop never saw the payment" in replayed.text
    assert staff.summary() == "Charged 26.37 EUR · fulfilment pending · nothing refunded · next: ship the order"

    after = order_api(oid)
    assert (after["state"], after["captured_amount"], after["refunded_amount"]) == ("fulfillment_pending", 2637, 0)
    assert (after["version"], after["timeline"]) == (before["version"], before["timeline"])
    intents = shop.intents_for(oid)
    assert [(pi.id, pi.status, pi.amount) for pi in intents] == [(intent, "succeeded", 2637)]
    charges = shop.stripe.v1.charges.list(params={"limit": 100}).auto_paging_iter()
    ours = [(c.amount, c.status, c.captured) for c in charges if c.payment_intent == intent]
    assert ours == [(2637, "succeeded", True)]


def test_support_forcing_a_finance_only_close_of_a_review_is_refused_and_changes_nothing(
    staff: Any, checkout: Any, order_api: Any
) -> None:
    order = checkout([{"sku": "HS-MUG", "quantity": 1}])
    oid = order["order_id"]

    staff.sign_in("sam")
    staff.order(oid)
    form = staff.form("review")
    staff.fill(form, note="customer disputes the delivery address")
    staff.submit(form)
    assert staff.result() == "Done (200)."
    staff.order(oid)
    staff.shot("order under review")
    assert " · needs review · " in staff.summary()
    under_review = order_api(oid)
    assert under_review["state"] == "needs_review"

    close = staff.form("close_review")
    staff.fill(close, to="fulfillment_pending", reason="address confirmed")
    staff.submit(close, force=True)
    staff.shot("forced close refused")
    assert staff.result() == "Refused by the service: 403 Forbidden"
    assert "requires one of the roles: finance, admin" in staff.text()

    after = order_api(oid)
    assert (after["state"], after["version"], len(after["timeline"])) == (
        "needs_review",
        under_review["version"],
        len(under_review["timeline"]),
    )
    staff.order(oid)
    assert " · needs review · " in staff.summary()


def test_a_double_clicked_and_reloaded_refund_is_made_once(
    staff: Any, shop: Any, checkout: Any, order_api: Any, console_log: Any
) -> None:
    order = checkout([{"sku": "HS-CAP", "quantity": 1}])
    oid, intent = order["order_id"], order["payment_intent_id"]

    staff.sign_in("sam")
    staff.order(oid)
    form = staff.form("refund")
    staff.fill(form, amount="5.00", reason="late delivery goodwill")
    button = form.find_element("css selector", "button[type=submit]")

    def double_click_while_the_services_are_slow() -> None:
        # The services held still for a moment, so the second click lands while the first submission still
        # waits for its answer. The clicks are dispatched in the page: WebDriver's own click would wait for the
        # first navigation to finish before it clicks again.
        shop.system.freeze()
        thaw = threading.Timer(1.0, shop.system.thaw)
        thaw.start()
        try:
            staff.driver.execute_script("const b = arguments[0]; b.click(); setTimeout(() => b.click(), 300);", button)
            time.sleep(0.6)
        finally:
            thaw.join()
            shop.system.thaw()

    staff.navigating(double_click_while_the_services_are_slow)
    staff.shot("double-clicked refund")
    assert staff.result() == "Done (202)."
    # then the person reloads the answer, and the browser posts the form a third time
    staff.navigating(staff.driver.refresh)
    staff.shot("refund answer reloaded")
    assert staff.result() == "Done (202)."

    # the browser did send the one rendered form three times, each time with the key that form stands for
    sent = [r for r in console_log("staff action") if r.get("order_id") == oid and r.get("action") == "refund"]
    assert len(sent) == 3 and len({r["idempotency_key"] for r in sent}) == 1, sent

    staff.wait_page(f"/orders/{oid}", lambda: "succeeded" in staff.panel("Refunds").text, "the refund")
    staff.shot("one refund on the order")
    assert len(staff.panel("Refunds").find_elements("css selector", "tbody tr")) == 1
    assert [(r.amount, r.status) for r in shop.refunds_for(intent)] == [(500, "succeeded")]
    assert [(r["amount"], r["state"]) for r in order_api(oid)["refunds"]] == [(500, "succeeded")]
