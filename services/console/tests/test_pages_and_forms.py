"""Pages and forms: the CSRF token guards every POST, each rendered form has its own idempotency key, a role the
staff member lacks greys the button out and a forced POST shows the service's own refusal, and no page answers
500 or without the security headers."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

Harness = Any
ORDER = "/orders/0b0e5f8e-4c1a-4d55-9a53-2b7c1f0a9d11"


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_calls_nothing(harness: Harness) -> None:
    await harness.sign_in("ada")
    fields = await harness.form_fields(ORDER, ORDER + "/actions/review")
    harness.recorded.calls.clear()
    missing = await harness.browser.post(
        ORDER + "/actions/review", data={"form_id": fields["form_id"], "note": "check"}
    )
    wrong = await harness.browser.post(ORDER + "/actions/review", data={**fields, "csrf": "x" * 43, "note": "check"})
    assert missing.status_code == 403 and wrong.status_code == 403
    assert "security token" in missing.text
    assert harness.recorded.calls == []


async def test_a_post_from_another_origin_is_refused_even_with_the_token(harness: Harness) -> None:
    await harness.sign_in("ada")
    fields = await harness.form_fields(ORDER, ORDER + "/actions/review")
    harness.recorded.calls.clear()
    response = await harness.browser.post(
        ORDER + "/actions/review", data={**fields, "note": "check"}, headers={"Origin": "https://evil.test"}
    )
    assert response.status_code == 403
    assert harness.recorded.calls == []


async def test_a_double_submit_sends_one_idempotency_key_and_a_new_form_another(harness: Harness) -> None:
    await harness.sign_in("ada")
    fields = await harness.form_fields(ORDER, ORDER + "/actions/review")
    harness.recorded.calls.clear()
    for _ in range(2):
        response = await harness.browser.post(ORDER + "/actions/review", data={**fields, "note": "customer called"})
        assert response.status_code == 200 and "Done" in response.text
    again = await harness.form_fields(ORDER, ORDER + "/actions/review")
    await harness.browser.post(ORDER + "/actions/review", data={**again, "note": "customer called"})
    posts = harness.recorded.posts()
    assert [p["path"] for p in posts] == [f"/v1/admin{ORDER}/review"] * 3
    assert posts[0]["idempotency_key"] == posts[1]["idempotency_key"] != posts[2]["idempotency_key"]
    assert json.loads(posts[0]["body"]) == {"note": "customer called"}


async def test_support_sees_finance_actions_disabled_and_a_forced_post_shows_the_services_403(harness: Harness) -> None:
    await harness.sign_in("sam")
    page = (await harness.page(ORDER)).text
    # the order is not under review, so close-review is not offered; the refund is support's and enabled
    assert 'action="' + ORDER + '/actions/refund"' in page
    refund_form = page.split('action="' + ORDER + '/actions/refund"')[1].split("</form>")[0]
    assert "disabled" not in refund_form.split("<button")[1].split(">")[0]
    approvals = (await harness.page("/approvals")).text
    assert "needs finance" in approvals or "not available" in approvals

    fields = await harness.form_fields(ORDER, ORDER + "/actions/review")
    harness.recorded.calls.clear()
    forced = await harness.browser.post(
        ORDER + "/actions/close_review", data={**fields, "to": "closed", "reason": "looks fine"}
    )
    assert forced.status_code == 403
    assert "Refused by the service: 403 Forbidden" in forced.text
    assert "requires one of the roles: finance, admin" in forced.text
    assert [p["path"] for p in harness.recorded.posts()] == [f"/v1/admin{ORDER}/review/close"]


async def test_a_disabled_button_names_the_role_it_needs(harness: Harness) -> None:
    await harness.sign_in("fran")
    page = (await harness.page(ORDER)).text
    redrive = page.split('action="' + ORDER + '/actions/redrive"')[1].split("</form>")[0]
    assert '<button type="submit" disabled' in redrive and "needs support or admin" in redrive


async def test_refund_amounts_are_read_in_the_orders_currency(harness: Harness) -> None:
    await harness.sign_in("fran")
    fields = await harness.form_fields(ORDER, ORDER + "/actions/refund")
    harness.recorded.calls.clear()
    ok = await harness.browser.post(
        ORDER + "/actions/refund", data={**fields, "amount": "12.5", "reason": "damaged", "restock": "on"}
    )
    assert ok.status_code == 200
    [post] = harness.recorded.posts()
    assert json.loads(post["body"]) == {"amount": 1250, "reason": "damaged", "restock": True}
    harness.recorded.calls.clear()
    bad = await harness.browser.post(
        ORDER + "/actions/refund", data={**fields, "amount": "12.505", "reason": "damaged"}
    )
    assert bad.status_code == 422 and "2 decimal places" in bad.text
    assert harness.recorded.posts() == []


async def test_order_page_summary_and_panels_that_are_not_offered(harness: Harness) -> None:
    await harness.sign_in("sam")
    response = await harness.page(ORDER)
    assert response.status_code == 200
    text = response.text
    assert "Charged 57.43 EUR · fulfilment pending · nothing refunded · next: ship the order" in text
    # payment answers 404 for every route here; inventory cannot be reached; webhook-ingest has no address
    assert "not available: the payment service does not offer this yet" in text
    assert "not available: the inventory service cannot be reached" in text
    assert "not available: no address configured for the webhook-ingest service" in text


async def test_unknown_order_and_unknown_page_are_problem_pages_not_json(harness: Harness) -> None:
    await harness.sign_in("sam")
    missing = await harness.page("/orders/11111111-1111-4111-8111-111111111111")
    assert missing.status_code == 404 and "Order not found" in missing.text
    nowhere = await harness.page("/no/such/page")
    assert nowhere.status_code == 404 and nowhere.headers["content-type"].startswith("text/html")
    not_uuid = await harness.page("/orders/HS-0B0E5F8E")
    assert not_uuid.status_code == 404


async def test_every_page_carries_the_security_headers(harness: Harness) -> None:
    for path in ("/", "/no/such/page"):
        response = await harness.page(path)
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "script-src" not in csp and "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "same-origin"
        assert "<script" not in response.text


async def test_pages_need_a_session(harness: Harness) -> None:
    for path in ("/search", ORDER, "/approvals", "/dashboard"):
        response = await harness.page(path)
        assert response.status_code == 303 and response.headers["location"] == "/"
    post = await harness.browser.post(ORDER + "/actions/review", data={"note": "x"})
    assert post.status_code == 401
    assert harness.recorded.calls == []


async def test_search_box_routes_by_shape(harness: Harness) -> None:
    await harness.sign_in("sam")
    by_id = await harness.page("/search?q=0B0E5F8E-4C1A-4D55-9A53-2B7C1F0A9D11")
    assert by_id.status_code == 303 and by_id.headers["location"] == ORDER
    by_reference = await harness.page("/search?q=hs-0b0e5f8e")
    assert by_reference.status_code == 303 and by_reference.headers["location"] == ORDER
    by_email = await harness.page("/search?q=Kim@Example.com")
    assert by_email.status_code == 200 and "HS-0B0E5F8E" in by_email.text
    sent = [c for c in harness.recorded.calls if c["path"] == "/v1/admin/orders"]
    assert sent  # the email search went to the order search, not elsewhere


async def test_dashboard_renders_before_any_scrape(harness: Harness) -> None:
    await harness.sign_in("sam")
    response = await harness.page("/dashboard")
    assert response.status_code == 200
    assert "Checkouts created" in response.text and "no data" in response.text


async def test_an_open_dead_letter_of_the_order_is_applied_again_by_the_service_that_holds_it(harness: Harness) -> None:
    await harness.sign_in("sam")
    action = ORDER + "/actions/redrive_dead_letter"
    fields = await harness.form_fields(ORDER, action)
    assert (fields["service"], fields["dead_letter_id"]) == ("order", "41")
    harness.recorded.calls.clear()
    for _ in range(2):  # a double click
        done = await harness.browser.post(action, data={**fields, "reason": "stock row fixed by hand"})
        assert done.status_code == 200 and "Done" in done.text
    posts = harness.recorded.posts()
    assert [p["path"] for p in posts] == ["/v1/admin/dead-letters/41/redrive"] * 2
    assert posts[0]["idempotency_key"] == posts[1]["idempotency_key"]
    assert json.loads(posts[0]["body"]) == {"reason": "stock row fixed by hand"}

    # a forged form names no service the console knows, or no dead letter: nothing is sent anywhere
    harness.recorded.calls.clear()
    for forged in ({"service": "evil.test"}, {"dead_letter_id": "41/../../orders"}, {"dead_letter_id": "0"}):
        refused = await harness.browser.post(action, data={**fields, "reason": "stock row fixed", **forged})
        assert refused.status_code == 400
    assert harness.recorded.posts() == []


async def test_who_asked_for_an_approval_may_withdraw_it_and_only_finance_decides_anothers(harness: Harness) -> None:
    approval = "/approvals/6f1d2c3b-0a9e-4d8c-b7a6-5e4f3d2c1b0a"
    await harness.sign_in("sam")  # asked for it
    page = (await harness.page("/approvals")).text
    withdraw = page.split(f'action="{approval}/reject"')[1].split("</form>")[0]
    approve = page.split(f'action="{approval}/approve"')[1].split("</form>")[0]
    assert ">withdraw</button>" in withdraw and "disabled" not in withdraw
    assert "disabled" in approve and "approving needs finance" in page
    fields = await harness.form_fields("/approvals", f"{approval}/reject")
    harness.recorded.calls.clear()
    done = await harness.browser.post(f"{approval}/reject", data={**fields, "reason": "customer found the parcel"})
    assert done.status_code == 200 and "Done" in done.text
    [post] = harness.recorded.posts()
    assert post["path"] == "/v1/admin/refund-approvals/6f1d2c3b-0a9e-4d8c-b7a6-5e4f3d2c1b0a/reject"
    assert post["idempotency_key"] and json.loads(post["body"]) == {"reason": "customer found the parcel"}

    await harness.sign_in("fran")  # finance decides, and did not ask
    page = (await harness.page("/approvals")).text
    for decision in ("approve", "reject"):
        form = page.split(f'action="{approval}/{decision}"')[1].split("</form>")[0]
        assert f">{decision}</button>" in form and "disabled" not in form
