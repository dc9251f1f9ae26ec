"""Abuse limits inside the service: checkout, payment attempts and lookups per client address and per
customer; a refused request answers 429 with Retry-After and holds nothing."""

from __future__ import annotations

import uuid

import pytest

from handshake_devstack.testing.fixtures import isolated_kafka_settings
from handshake_devstack.tokens import DevTokenIssuer
from handshake_order.settings import OrderSettings


@pytest.fixture
def settings(stack, fresh_database) -> OrderSettings:
    # bursts of 2 and a rate so slow that nothing refills during a test; one gateway hop in front
    return OrderSettings(
        database_url=fresh_database("handshake_order"),
        rate_limits_enabled=True,
        trusted_proxy_hops=1,
        checkout_burst_per_address=2,
        checkout_per_minute_per_address=0.01,
        checkout_burst_per_customer=2,
        checkout_per_minute_per_customer=0.01,
        payment_attempts_burst_per_address=2,
        payment_attempts_per_minute_per_address=0.01,
        lookups_burst_per_address=3,
        lookups_per_minute_per_address=0.01,
        **isolated_kafka_settings(stack),
    )


def assert_refused(response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["type"].endswith("/rate-limited")


async def test_checkout_is_limited_per_client_address_and_a_refused_one_holds_nothing(shop) -> None:
    for i in range(2):
        assert (await shop.checkout(key=f"a{i}", **shop.from_address("203.0.113.7"))).status_code == 202
    before = await shop.held()

    assert_refused(await shop.checkout(key="a-third", **shop.from_address("203.0.113.7")))
    assert await shop.held() == before == (2, 2)

    # another address is not affected; what a client writes left of the gateway's entry is not believed
    assert (await shop.checkout(key="b0", **shop.from_address("198.51.100.1"))).status_code == 202
    assert_refused(await shop.checkout(key="a-spoofed", **shop.from_address("198.51.100.99, 203.0.113.7")))


async def test_a_signed_in_customer_is_limited_across_addresses(shop) -> None:
    customer = shop.token("cus-limited")
    for i, address in enumerate(("192.0.2.1", "192.0.2.2")):
        r = await shop.checkout(key=f"c{i}", **customer, **shop.from_address(address))
        assert r.status_code == 202, r.text
    assert_refused(await shop.checkout(key="c2", **customer, **shop.from_address("192.0.2.3")))
    # someone else's budget is untouched
    assert (
        await shop.checkout(key="d0", **shop.token("cus-other"), **shop.from_address("192.0.2.4"))
    ).status_code == 202


async def test_a_forged_token_cannot_spend_a_customers_budget(shop) -> None:
    forged = DevTokenIssuer().issue("cus-victim")  # signed by a key the service does not trust
    for i in range(5):
        r = await shop.checkout(key=f"f{i}", Authorization=f"Bearer {forged}", **shop.from_address(f"192.0.2.{10 + i}"))
        assert r.status_code == 401
    victim = shop.token("cus-victim")
    assert (await shop.checkout(key="v0", **victim, **shop.from_address("192.0.2.30"))).status_code == 202


async def test_payment_attempts_and_lookups_are_limited_per_address(shop) -> None:
    order_id = str(uuid.uuid4())
    for _ in range(2):
        r = await shop.client.post(
            f"/v1/orders/{order_id}/payment-attempts",
            headers={"Idempotency-Key": "p", **shop.from_address("203.0.113.50")},
        )
        assert r.status_code != 429
    assert_refused(
        await shop.client.post(
            f"/v1/orders/{order_id}/payment-attempts",
            headers={"Idempotency-Key": "p", **shop.from_address("203.0.113.50")},
        )
    )

    # guessing order ids or tokens: a few misses, then the door closes for that address
    for _ in range(3):
        assert (
            await shop.client.get(f"/v1/orders/{uuid.uuid4()}", headers=shop.from_address("203.0.113.60"))
        ).status_code == 404
    assert_refused(await shop.client.get(f"/v1/orders/{uuid.uuid4()}", headers=shop.from_address("203.0.113.60")))
    assert_refused(
        await shop.client.get(f"/v1/orders/{order_id}/payment-session", headers=shop.from_address("203.0.113.60"))
    )
