"""The payment service's HTTP surface: the internal payment-session read and the admin view."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from handshake_devstack.tokens import issue_token
from handshake_shared.events import ORDER_EVENTS


def session_url(order_id: str) -> str:
    return f"/internal/v1/orders/{order_id}/payment-session"


def internal_credential(service) -> dict[str, str]:
    return {"Authorization": "Bearer " + service.settings.internal_api_tokens[0].get_secret_value()}


async def test_payment_session_needs_a_service_credential(service, internal_http) -> None:
    order_id = str(uuid.uuid4())
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": "Basic x"}):
        r = await internal_http.get(session_url(order_id), headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401 and "client_secret" not in r.text
    # a staff or customer token is not a service credential, whatever its roles
    admin = issue_token(service.settings, "ops-1", ["admin", "support", "finance"])
    assert (
        await internal_http.get(session_url(order_id), headers={"Authorization": f"Bearer {admin}"})
    ).status_code == 401


async def test_the_internal_api_answers_only_on_its_own_port(service, http, internal_http, browser, events) -> None:
    order_id = str(uuid.uuid4())
    assert await service.deliver(ORDER_EVENTS, events.requested(order_id, str(uuid.uuid4()), amount=1200)) == "applied"
    assert (await internal_http.get(session_url(order_id), headers=internal_credential(service))).status_code == 200

    # the public port (what a Service or gateway may expose) does not know the route, even with the credential
    public = await http.get(session_url(order_id), headers=internal_credential(service))
    assert public.status_code == 404 and "client_secret" not in public.text
    # and the internal port serves nothing else
    assert (await internal_http.get("/metrics")).status_code == 404
    assert (await internal_http.get(f"/v1/admin/orders/{order_id}/payments")).status_code == 404


async def test_payment_session_hands_out_the_providers_client_secret_and_stores_none(
    service, internal_http, browser, events
) -> None:
    http = internal_http
    internal = internal_credential(service)
    order_id = str(uuid.uuid4())

    missing = await http.get(session_url(order_id), headers=internal)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"

    assert await service.deliver(ORDER_EVENTS, events.requested(order_id, str(uuid.uuid4()), amount=1999)) == "applied"
    [attempt] = await service.attempts(order_id)
    [intent] = await browser.intents_for(order_id)

    r = await http.get(session_url(order_id), headers=internal)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {
        "order_id": order_id,
        "attempt_id": str(attempt.id),
        "payment_intent_id": intent.id,
        "client_secret": intent.client_secret,
        "amount": 1999,
        "currency": "EUR",
        "status": "requires_payment_method",
    }
    # the secret lives only at the provider: not in any of our tables, not in any event we publish
    async with service.db.engine.connect() as conn:
        dump = (
            await conn.execute(
                text(
                    "SELECT concat_ws('|', (SELECT string_agg(t::text, '|') FROM payment_attempts t),"
                    " (SELECT string_agg(t::text, '|') FROM attempt_transitions t),"
                    " (SELECT string_agg(convert_from(payload, 'UTF8'), '|') FROM outbox))"
                )
            )
        ).scalar_one()
    assert intent.id in dump and intent.client_secret not in dump


async def test_admin_payments_lists_attempts_with_their_audit_for_staff_only(service, http, events) -> None:
    order_id = str(uuid.uuid4())
    assert await service.deliver(ORDER_EVENTS, events.requested(order_id, str(uuid.uuid4()), amount=500)) == "applied"
    url = f"/v1/admin/orders/{order_id}/payments"

    assert (await http.get(url)).status_code == 401
    customer = issue_token(service.settings, "customer-1", [])
    assert (await http.get(url, headers={"Authorization": f"Bearer {customer}"})).status_code == 403

    support = issue_token(service.settings, "agent-7", ["support"])
    r = await http.get(url, headers={"Authorization": f"Bearer {support}"})
    assert r.status_code == 200, r.text
    [attempt] = r.json()["attempts"]
    assert (attempt["state"], attempt["amount"], attempt["currency"]) == ("requires_payment", 500, "EUR")
    assert [(t["from"], t["to"]) for t in attempt["transitions"]] == [
        (None, "creating"),
        ("creating", "requires_payment"),
    ]
    assert "client_secret" not in r.text


async def test_metrics_count_attempt_outcomes_and_time_provider_calls(service, http, events) -> None:
    assert (
        await service.deliver(ORDER_EVENTS, events.requested(str(uuid.uuid4()), str(uuid.uuid4()), amount=700))
        == "applied"
    )

    body = (await http.get("/metrics")).text

    assert 'handshake_payment_attempts_total{outcome="created"}' in body
    assert 'handshake_payment_attempts_total{outcome="intent_created"}' in body
    assert 'handshake_payment_provider_request_seconds_count{operation="payment_intents.create"}' in body
