"""One order may ask for payment a bounded number of times: every attempt is a new PaymentIntent, and an
unbounded number of them is a card-testing machine."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from handshake_devstack.testing.fixtures import isolated_kafka_settings
from handshake_order.settings import OrderSettings


@pytest.fixture
def settings(stack, fresh_database) -> OrderSettings:
    return OrderSettings(
        database_url=fresh_database("handshake_order"),
        max_payment_attempts_per_order=2,
        **isolated_kafka_settings(stack),
    )


async def payment_requests(shop, order_id: str) -> int:
    async with shop.runtime.db.engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT count(*) FROM outbox WHERE message_key = :k AND event_type = 'order.payment_requested'"),
                {"k": order_id},
            )
        ).scalar_one()


async def decline(shop, order_id: str, attempt: str) -> None:
    await shop.deliver(
        "payment.intent_created",
        order_id,
        {
            "order_id": order_id,
            "attempt_id": attempt,
            "payment_intent_id": f"pi_{attempt}",
            "amount": 3470,
            "currency": "EUR",
        },
    )
    await shop.deliver(
        "payment.failed", order_id, {"order_id": order_id, "attempt_id": attempt, "failure_code": "card_declined"}
    )
    assert (await shop.order(order_id))["state"] == "payment_failed"


async def test_an_order_gets_a_bounded_number_of_payment_attempts(shop) -> None:
    placed = (await shop.checkout(key="cap")).json()
    order_id, token = placed["order_id"], {"X-Order-Token": placed["lookup_token"]}
    await shop.reserve(order_id)
    assert await payment_requests(shop, order_id) == 1
    await decline(shop, order_id, "00000000-0000-4000-8000-0000000000a1")

    retry = await shop.client.post(
        f"/v1/orders/{order_id}/payment-attempts", headers={"Idempotency-Key": "r1", **token}
    )
    assert retry.status_code == 202, retry.text
    assert await payment_requests(shop, order_id) == 2
    await decline(shop, order_id, "00000000-0000-4000-8000-0000000000a2")

    refused = await shop.client.post(
        f"/v1/orders/{order_id}/payment-attempts", headers={"Idempotency-Key": "r2", **token}
    )
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/payment-attempts-exhausted")
    # nothing asked of payment, the order unchanged
    assert await payment_requests(shop, order_id) == 2
    assert (await shop.order(order_id))["state"] == "payment_failed"
    # a replay of the accepted retry is still its stored answer, not a new attempt
    again = await shop.client.post(
        f"/v1/orders/{order_id}/payment-attempts", headers={"Idempotency-Key": "r1", **token}
    )
    assert again.status_code == 202 and again.headers.get("Idempotent-Replayed") == "true"
    assert await payment_requests(shop, order_id) == 2
