"""The edge gateway as deployed: nginx rendered from deploy/gateway/nginx.conf.template, with the limits
of the Kubernetes gateway policies, in front of the four services running as OS processes.

The emulator's webhook endpoint is the gateway's URL and webhook-ingest's gap scan is off, so every
provider event that reaches webhook-ingest came through nginx."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.tests.gateway_http import (
    RawResponse,
    customer_event,
    fire_together,
    raw_exchange,
    request_bytes,
    stripe_signature,
)
from deploy.tests.gateway_nginx import NginxGateway
from handshake_devstack.storefront import Storefront
from handshake_devstack.system import System
from handshake_devstack.testing.fixtures import PROJECT_ROOT

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
GATEWAY_PROBLEMS = "https://handshake.dev/problems/gateway-"


class CustomerView:
    """The system as a customer's browser sees it: order's API only, and only through the gateway."""

    def __init__(self, system: System, gateway_url: str) -> None:
        self._system = system
        self._gateway_url = gateway_url

    def url(self, service: str) -> str:
        if service != "order":
            raise LookupError(f"a customer has no route to {service}")
        return self._gateway_url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._system, name)


@pytest.fixture(scope="module")
def system(stack) -> Iterator[System]:
    s = System(
        stack,
        PROJECT_ROOT,
        database_prefix=f"gw_{uuid.uuid4().hex[:6]}_",
        # the endpoint the emulator calls is the gateway, registered below once it listens
        register_webhook=False,
        # no second way in: an event the gateway dropped must stay missing
        extra_env={"webhook-ingest": {"HANDSHAKE_GAP_SCAN_INTERVAL_SECONDS": "0"}},
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def gateway(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxGateway]:
    gw = NginxGateway(
        tmp_path_factory.mktemp("gateway"),
        webhook_ingest=f"127.0.0.1:{system.ports['webhook-ingest']}",
        order=f"127.0.0.1:{system.ports['order']}",
    )
    gw.start()
    try:
        system.stack.stripe.register_webhook(gw.url + "/webhooks/stripe", webhook_id=system.webhook_id)
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def operator(system: System) -> Storefront:
    """Staff, on the services' own ports (inside the cluster): seeds, reads what was stored."""
    shop = Storefront(system)
    shop.seed()
    return shop


@pytest.fixture(scope="module")
def customer(system: System, gateway: NginxGateway, operator: Storefront) -> Storefront:
    return Storefront(CustomerView(system, gateway.url))


@pytest.fixture
def secret(system: System) -> str:
    return system.stack.stripe.webhook_secret


def stored_event(system: System, operator: Storefront, event_id: str) -> httpx.Response:
    return httpx.get(
        f"{system.url('webhook-ingest')}/v1/admin/provider-events/{event_id}", headers=operator.admin(), timeout=10
    )


def stored_rows(system: System, event_ids: list[str]) -> list[asyncpg.Record]:
    async def query() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(system.database_urls["webhook-ingest"])
        try:
            return await conn.fetch(
                "SELECT provider_event_id, delivery_count, source, forwarded_event_id"
                " FROM provider_events WHERE provider_event_id = ANY($1::text[])",
                event_ids,
            )
        finally:
            await conn.close()

    return asyncio.run(query())


def rejected_too_large(system: System) -> float:
    text = httpx.get(system.url("webhook-ingest") + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "handshake_webhook_rejected_total" and sample.labels.get("reason") == "too_large":
                return sample.value
    return 0.0


def is_gateway_refusal(response: httpx.Response | RawResponse, status: int) -> bool:
    """The gateway's own answer (its problem type), not a service's answer passed through."""
    code = response.status_code if isinstance(response, httpx.Response) else response.status
    if code != status or response.headers.get("content-type") != "application/problem+json":
        return False
    return str(response.json().get("type", "")).startswith(GATEWAY_PROBLEMS)


def deliver(gateway: NginxGateway, body: bytes, secret: str, **kwargs: Any) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Stripe-Signature": stripe_signature(body, secret)}
    return httpx.post(gateway.url + "/webhooks/stripe", content=body, headers=headers, timeout=30, **kwargs)


# 1. A paid checkout, and the signature still verifies after the gateway ------------------------------


def test_a_checkout_paid_through_the_gateway_reaches_fulfillment_pending(customer, operator, system, gateway):
    products = httpx.get(gateway.url + "/v1/products", timeout=10)
    assert products.status_code == 200
    assert {p["sku"] for p in products.json()["products"]} >= {"HS-MUG", "HS-TEE"}
    lines = [{"sku": "HS-MUG", "quantity": 1}]
    quote = httpx.post(gateway.url + "/v1/quotes", json={"lines": lines, "region": "DE", "shipping_method": "standard"})
    assert quote.status_code == 200, quote.text

    result = customer.full_checkout(lines)
    order = result["order"]
    assert order["state"] == "fulfillment_pending"
    assert [step["to"] for step in order["timeline"]] == ["draft", "payment_pending", "paid", "fulfillment_pending"]

    # the emulator's own signed deliveries are what paid it, and only the gateway could have passed them on
    r = httpx.get(
        system.url("webhook-ingest") + "/v1/admin/provider-events",
        params={"order_id": order["order_id"]},
        headers=operator.admin(),
        timeout=10,
    )
    r.raise_for_status()
    events = r.json()["provider_events"]
    assert "payment_intent.succeeded" in {e["type"] for e in events}
    assert {e["source"] for e in events} == {"webhook"}
    assert '"POST /webhooks/stripe HTTP/1.1" 200' in gateway.access_log()


def test_unusual_bytes_reach_webhook_ingest_exactly_as_signed(operator, system, gateway, secret):
    event_id = f"evt_gw_bytes_{uuid.uuid4().hex[:12]}"
    # key order Stripe would never use, raw UTF-8 and escaped non-ASCII, tabs, CRLF, trailing blanks:
    # a single byte normalised on the way would break the signature
    body = (
        '{ "type" :"customer.updated",\r\n\t"data": {"object": {"name": "Zoë Ünïcødé ✓ 🧾", '
        '"object":"customer",   "note": "tab\\tnew\\nline \\u00e9\\u2603", "id": "cus_gw_bytes"}},\n'
        f'  "livemode": false, "created": {int(time.time())}, "object": "event", "api_version": "2017-08-15",'
        f'\t"id": "{event_id}"   }}  \r\n  '
    ).encode()

    first = deliver(gateway, body, secret)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "duplicate": False}

    # the same bytes again, now streamed chunked: the gateway de-chunks, the bytes stay the same
    again = httpx.post(
        gateway.url + "/webhooks/stripe",
        content=iter([body[:7], body[7:100], body[100:]]),
        headers={"Content-Type": "application/json", "Stripe-Signature": stripe_signature(body, secret)},
        timeout=30,
    )
    assert again.status_code == 200, again.text
    assert again.json() == {"received": True, "duplicate": True}

    stored = stored_event(system, operator, event_id)
    assert stored.status_code == 200, stored.text
    stored_body = stored.json()
    assert stored_body["raw_body_sha256"] == hashlib.sha256(body).hexdigest()
    assert stored_body["raw_body_bytes"] == len(body)
    assert stored_body["delivery_count"] == 2
    assert stored_body["payload"]["data"]["object"]["name"] == "Zoë Ünïcødé ✓ 🧾"

    # and verification is real: one changed blank and webhook-ingest itself refuses it
    tampered = body.replace(b'"object":"customer",   ', b'"object":"customer",  ')
    refused = httpx.post(
        gateway.url + "/webhooks/stripe",
        content=tampered,
        headers={"Content-Type": "application/json", "Stripe-Signature": stripe_signature(body, secret)},
        timeout=30,
    )
    assert refused.status_code == 400
    assert refused.json()["reason"] == "signature_mismatch"


# 2. Oversize bodies stop at the gateway --------------------------------------------------------------


def padded_event(event_id: str, size: int) -> bytes:
    """A valid event of exactly `size` bytes (JSON allows trailing whitespace)."""
    _, body = customer_event(event_id)
    assert len(body) < size
    return body + b" " * (size - len(body))


def test_a_body_over_one_mebibyte_gets_413_from_the_gateway_and_nothing_is_stored(operator, system, gateway, secret):
    refused_before = rejected_too_large(system)
    big_id = f"evt_gw_big_{uuid.uuid4().hex[:12]}"
    big = padded_event(big_id, MIB + 1)
    signature = stripe_signature(big, secret)
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature}

    declared = httpx.post(gateway.url + "/webhooks/stripe", content=big, headers=headers, timeout=30)
    assert declared.request.headers["content-length"] == str(MIB + 1)
    assert is_gateway_refusal(declared, 413), declared.text

    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    chunked = httpx.post(gateway.url + "/webhooks/stripe", content=iter(chunks), headers=headers, timeout=30)
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in chunked.request.headers
    assert is_gateway_refusal(chunked, 413), chunked.text

    # webhook-ingest never saw either: nothing stored, and its own too-large refusals did not move
    missing = stored_event(system, operator, big_id)
    assert missing.status_code == 404
    assert missing.json()["type"] == "https://handshake.dev/problems/provider-event-not-found"
    assert rejected_too_large(system) == refused_before

    # the boundary is the same on both sides: exactly 1 MiB passes the gateway and is stored
    edge_id = f"evt_gw_edge_{uuid.uuid4().hex[:12]}"
    edge = padded_event(edge_id, MIB)
    accepted = deliver(gateway, edge, secret)
    assert accepted.status_code == 200, accepted.text
    assert stored_event(system, operator, edge_id).json()["raw_body_bytes"] == MIB


def test_the_order_api_takes_at_most_64_kib(gateway):
    def quote_of(size: int) -> httpx.Response:
        head, tail = b'{"lines": [], "region": "DE", "shipping_method": "standard", "pad": "', b'"}'
        body = head + b"x" * (size - len(head) - len(tail)) + tail
        return httpx.post(gateway.url + "/v1/quotes", content=body, headers={"Content-Type": "application/json"})

    assert is_gateway_refusal(quote_of(64 * 1024 + 1), 413)
    # 64 KiB exactly passes the gateway; order itself judges the (invalid) quote
    at_limit = quote_of(64 * 1024)
    assert at_limit.status_code in (400, 422), at_limit.text
    assert not at_limit.json()["type"].startswith(GATEWAY_PROBLEMS)


# 3. A burst beyond the rate: some 429s, Stripe's retries succeed, every event stored once -------------


def test_a_burst_beyond_the_rate_is_partly_refused_and_retries_store_every_event_once(
    customer, system, gateway, secret
):
    events = [customer_event(f"evt_gw_burst_{i:03d}_{uuid.uuid4().hex[:8]}") for i in range(400)]

    def delivery(body: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Stripe-Signature": stripe_signature(body, secret)}
        return request_bytes("POST", "/webhooks/stripe", body=body, headers=headers)

    time.sleep(1.1)  # a full bucket, whatever the tests before did
    started = time.monotonic()
    answers = fire_together(gateway.port, [delivery(body) for _, body in events])
    elapsed = time.monotonic() - started

    statuses = [a.status for a in answers]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    accepted, refused = statuses.count(200), statuses.count(429)
    # the bucket of 100 at once (plus the request that opens it), then 100 per second
    assert 100 <= accepted <= 101 + 100 * elapsed + 2, (accepted, elapsed)
    assert refused > 0
    for answer in answers:
        if answer.status == 429:
            assert answer.json()["type"] == GATEWAY_PROBLEMS + "rate-limited"
            assert answer.headers["retry-after"] == "1"

    # the order API has a bucket of its own: a customer is not refused because webhooks are busy
    assert httpx.get(gateway.url + "/v1/products", timeout=10).status_code == 200

    # Stripe's retry: each refused event again, newly signed, backing off on another 429
    pending = [body for (_, body), a in zip(events, answers, strict=True) if a.status == 429]
    rounds = 0
    while pending:
        rounds += 1
        assert rounds <= 20, f"{len(pending)} deliveries still refused"
        still: list[bytes] = []
        with httpx.Client(timeout=30) as client:
            for body in pending:
                headers = {"Content-Type": "application/json", "Stripe-Signature": stripe_signature(body, secret)}
                r = client.post(gateway.url + "/webhooks/stripe", content=body, headers=headers)
                if r.status_code == 429:
                    still.append(body)
                else:
                    assert r.status_code == 200, r.text
                    assert r.json()["duplicate"] is False
        pending = still
        if pending:
            time.sleep(1.0)

    rows = stored_rows(system, [event_id for event_id, _ in events])
    assert len(rows) == 400
    # one delivery each reached webhook-ingest: a refused request never got past the gateway
    assert {r["delivery_count"] for r in rows} == {1}
    assert {r["source"] for r in rows} == {"webhook"}
    assert all(r["forwarded_event_id"] is not None for r in rows)


# 4. Nothing but the public routes --------------------------------------------------------------------

NOT_PUBLIC = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("PUT", "/v1/admin/catalogue"),
    ("GET", "/v1/admin/orders/00000000-0000-0000-0000-000000000000"),
    ("POST", "/v1/admin/orders/00000000-0000-0000-0000-000000000000/refunds"),
    ("POST", "/v1/admin/stuck-orders/scan"),
    ("GET", "/v1/admin/provider-events?order_id=x"),
    ("POST", "/v1/admin/provider-events/evt_x/replay"),
    ("GET", "/v1/admin/orders/00000000-0000-0000-0000-000000000000/payments"),
    ("GET", "/v1/admin/reconciliation-runs"),
    ("GET", "/v1/admin/stock/HS-MUG"),
    ("PUT", "/v1/admin/stock/HS-MUG"),
    ("GET", "/internal/v1/orders/00000000-0000-0000-0000-000000000000/payment-session"),
    ("GET", "/stock/HS-MUG"),
    ("GET", "/v1/admin"),
    ("GET", "/v1/"),
    ("GET", "/"),
]
# request lines a client library would have cleaned up; nginx routes on the normalised path
DISGUISED = [
    "/v1/orders/x/../../v1/admin/catalogue",
    "/v1/products/../admin/orders/00000000-0000-0000-0000-000000000000",
    "/v1/orders/%2e%2e/%2e%2e/healthz",
    "/v1/orders/x/..%2f..%2fmetrics",
    "//v1/admin/catalogue",
    "/webhooks/stripe/../../readyz",
    "/v1/orders/00000000-0000-0000-0000-000000000000/%2e%2e/%2e%2e/admin/stock/HS-MUG",
    "/V1/ADMIN/CATALOGUE",
]


@pytest.mark.parametrize(("method", "path"), NOT_PUBLIC)
def test_operational_and_staff_paths_are_not_routed(method, path, gateway, operator):
    # even with a valid staff token: the gateway answers, no service does
    r = httpx.request(method, gateway.url + path, headers=operator.admin(), json={} if method != "GET" else None)
    assert r.status_code in (404, 405), (r.status_code, r.text)
    assert is_gateway_refusal(r, r.status_code), r.text


@pytest.mark.parametrize("target", DISGUISED)
def test_disguised_paths_are_not_routed(target, gateway, operator):
    answer = raw_exchange(gateway.port, request_bytes("GET", target, headers=operator.admin()))
    assert answer.status == 404, (answer.status, answer.body)
    assert answer.json()["type"] == GATEWAY_PROBLEMS + "not-routed", answer.body


def test_the_services_would_have_answered_those_paths(system, operator):
    """The control: the same requests straight to the services do get the services' answers."""
    assert httpx.get(system.url("order") + "/healthz").status_code == 200
    assert httpx.get(system.url("webhook-ingest") + "/metrics").status_code == 200
    direct = httpx.get(system.url("inventory") + "/v1/admin/stock/HS-MUG", headers=operator.admin())
    assert direct.status_code == 200 and "available" in direct.json()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/webhooks/stripe", 405),
        ("PUT", "/webhooks/stripe", 405),
        ("GET", "/webhooks/stripe/", 404),
        ("GET", "/v1/checkout", 405),
        ("DELETE", "/v1/orders/00000000-0000-0000-0000-000000000000", 405),
        ("POST", "/v1/products", 405),
        ("GET", "/v1/orders/00000000-0000-0000-0000-000000000000/cancel", 405),
        ("GET", "/v1/orders/00000000-0000-0000-0000-000000000000/refunds", 404),
    ],
)
def test_public_paths_only_with_their_method(method, path, status, gateway):
    r = httpx.request(method, gateway.url + path)
    assert is_gateway_refusal(r, status), (r.status_code, r.text)


def test_the_customer_api_works_through_the_gateway(customer, gateway):
    placed = customer.checkout([{"sku": "HS-TEE", "quantity": 1}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    assert customer.order(order_id, token)["order_id"] == order_id
    assert customer.payment_session(order_id, token)["payment_intent_id"]
    # a lookup token in the query string is refused: URLs end up in logs
    by_query = httpx.get(f"{gateway.url}/v1/orders/{order_id}", params={"token": token})
    assert by_query.status_code == 400
    assert by_query.json()["type"] == "https://handshake.dev/problems/token-in-query"
    # the service is sent the path the gateway checked, not the client's spelling of it
    spelled = raw_exchange(
        gateway.port, request_bytes("GET", f"/v1/./orders/x/../{order_id}", headers={"X-Order-Token": token})
    )
    assert spelled.status == 200, spelled.body
    assert spelled.json()["order_id"] == order_id
    # the service's own 404 passes through unchanged: the gateway only refuses what it does not route
    unknown = httpx.get(f"{gateway.url}/v1/orders/{uuid.uuid4()}", headers={"X-Order-Token": token})
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "https://handshake.dev/problems/order-not-found"
    cancelled = customer.cancel(order_id, token)
    assert cancelled.status_code < 500, cancelled.text
