"""What staff read about an order's payments: Stripe's live view next to ours, and the order behind an intent id.

The live view goes through the service's own gateway to the Stripe emulator (the real SDK), or through the
fault proxy in front of it where the provider is to fail."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from handshake_devstack.tokens import issue_token
from handshake_payment.app import create_app

CARD_DECLINED = "4000000000000341"
INTENTS = "/v1/payment_intents"


def staff(service: Any, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(service.settings, 'agent-7', list(roles))}"}


async def live(http: httpx.AsyncClient, service: Any, order_id: str) -> dict[str, Any]:
    r = await http.get(
        f"/v1/admin/orders/{order_id}/payments", params={"live": "true"}, headers=staff(service, "support")
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_live_view_disagrees_when_stripe_says_succeeded_and_we_still_wait_for_payment(
    service, http, checkout, events
) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 1250)
    intent = await checkout.pay(service, attempt)  # the customer paid; the webhook has not come

    [view] = (await live(http, service, order_id))["attempts"]
    assert view["state"] == "requires_payment"
    assert view["provider_live"]["status"] == "succeeded"
    assert (view["provider_live"]["amount"], view["provider_live"]["currency"]) == (1250, "EUR")
    assert view["provider_live"]["fetched_at"]
    assert view["provider_live_agrees"] is False

    # once the webhook is applied both sides say the same
    assert await service.deliver("provider.events.v1", events.stripe("payment_intent.succeeded", intent)) == "applied"
    [view] = (await live(http, service, order_id))["attempts"]
    assert (view["state"], view["provider_live"]["status"], view["provider_live_agrees"]) == (
        "succeeded",
        "succeeded",
        True,
    )


async def test_without_live_nothing_is_asked_of_stripe(service, http, checkout) -> None:
    order_id = str(uuid.uuid4())
    await checkout.attempt(service, order_id, 900)
    r = await http.get(f"/v1/admin/orders/{order_id}/payments", headers=staff(service, "finance"))
    assert r.status_code == 200
    [view] = r.json()["attempts"]
    assert "provider_live" not in view and "provider_live_agrees" not in view


async def test_a_provider_failure_for_one_attempt_is_shown_on_that_attempt_and_the_page_still_answers(
    faulty_service, faults, checkout, browser
) -> None:
    service = faulty_service
    order_id = str(uuid.uuid4())
    first = await checkout.attempt(service, order_id, 700)
    await browser.pay(first.provider_intent_id, CARD_DECLINED)
    second = await checkout.attempt(service, order_id, 700)
    # every try of the SDK (its own retry included) at the first intent fails at the provider
    faults.add("status", "GET", f"{INTENTS}/{first.provider_intent_id}", status=500, times=5)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://payment") as http:
        attempts = {a["attempt_id"]: a for a in (await live(http, service, order_id))["attempts"]}

    failed = attempts[str(first.id)]
    assert failed["provider_live"] == {"error": "provider error: APIError (HTTP 500)"}
    assert failed["provider_live_agrees"] is None
    fine = attempts[str(second.id)]
    assert fine["provider_live"]["status"] == "requires_payment_method" and fine["provider_live_agrees"] is True


@pytest.fixture
async def one_fetch_service(settings) -> AsyncIterator[Any]:
    app = create_app(settings.model_copy(update={"admin_live_max_fetches": 1}))
    yield app
    await app.state.runtime.db.dispose()
    await app.state.gateway.aclose()


async def test_only_the_newest_attempts_are_fetched_live(service, one_fetch_service, checkout, browser) -> None:
    order_id = str(uuid.uuid4())
    older = await checkout.attempt(service, order_id, 300)
    await browser.pay(older.provider_intent_id, CARD_DECLINED)
    newer = await checkout.attempt(service, order_id, 300)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=one_fetch_service), base_url="http://p") as http:
        attempts = {a["attempt_id"]: a for a in (await live(http, service, order_id))["attempts"]}

    assert attempts[str(newer.id)]["provider_live"]["status"] == "requires_payment_method"
    assert attempts[str(older.id)]["provider_live"] == {
        "error": "not fetched: only the newest 1 attempts are fetched live"
    }


async def test_lookup_by_an_abandoned_attempts_intent_id_finds_its_order(
    service, http, checkout, browser, events
) -> None:
    order_id = str(uuid.uuid4())
    declined = await checkout.attempt(service, order_id, 4200)
    intent = await browser.pay(declined.provider_intent_id, CARD_DECLINED)
    assert (
        await service.deliver("provider.events.v1", events.stripe("payment_intent.payment_failed", intent)) == "applied"
    )
    # the customer gave up on that card: the order asked for a new attempt, the first one stays failed
    await checkout.attempt(service, order_id, 4200)

    r = await http.get(
        "/v1/admin/payments",
        params={"provider_intent_id": declined.provider_intent_id},
        headers=staff(service, "support"),
    )
    assert r.status_code == 200, r.text
    [found] = r.json()["payments"]
    assert (found["order_id"], found["attempt_id"], found["state"]) == (order_id, str(declined.id), "failed")
    assert found["payment_intent_id"] == declined.provider_intent_id and found["amount"] == 4200


async def test_lookup_of_an_intent_we_never_created_finds_nothing_and_is_for_staff_only(service, http) -> None:
    url = "/v1/admin/payments"
    r = await http.get(url, params={"provider_intent_id": "pi_unknown"}, headers=staff(service, "finance"))
    assert (r.status_code, r.json()) == (200, {"payments": []})
    assert (await http.get(url, params={"provider_intent_id": "pi_x"})).status_code == 401
    customer = await http.get(url, params={"provider_intent_id": "pi_x"}, headers=staff(service))
    assert customer.status_code == 403 and customer.headers["content-type"] == "application/problem+json"
    for bad in ({}, {"provider_intent_id": ""}, {"provider_intent_id": "pi_\x00"}, {"provider_intent_id": "p" * 256}):
        refused = await http.get(url, params=bad, headers=staff(service, "admin"))
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
