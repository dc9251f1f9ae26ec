"""At most one captured attempt per order: a second attempt that also took (or held) money gives it back on
its own, against the Stripe emulator through the real SDK."""

from __future__ import annotations

import asyncio
import uuid

from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.refunds import automatic_refund_id
from handshake_shared.events import PROVIDER_EVENTS


async def test_two_paid_attempts_of_one_order_leave_exactly_one_capture(service, browser, events, checkout) -> None:
    order_id = str(uuid.uuid4())
    first = await checkout.attempt(service, order_id, 5000)
    second = await checkout.attempt(service, order_id, 5000)
    # two tabs: the customer confirmed both intents
    paid_first = await checkout.pay(service, first)
    paid_second = await checkout.pay(service, second)
    assert (paid_first.status, paid_second.status) == ("succeeded", "succeeded")

    for paid in (paid_first, paid_second):
        assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"
    # Stripe sends both again
    for paid in (paid_first, paid_second):
        assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"

    assert await browser.refunds_of(paid_first.id) == []
    [given_back] = await browser.refunds_of(paid_second.id)
    assert given_back.amount == 5000
    assert given_back.metadata.to_dict() == {"order_id": order_id, "refund_id": str(automatic_refund_id(second.id))}
    rows = {r.id: r for r in await service.attempts(order_id)}
    assert (rows[first.id].state, rows[first.id].duplicate_of) == (A.SUCCEEDED, None)
    assert (rows[second.id].state, rows[second.id].duplicate_of) == (A.SUCCEEDED, first.id)
    [refund] = await service.refunds(order_id)
    assert (
        refund.attempt_id,
        refund.amount,
        refund.state,
        refund.automatic,
        refund.reason,
        refund.provider_refund_id,
    ) == (
        second.id,
        5000,
        "succeeded",
        True,
        "duplicate_capture",
        given_back.id,
    )
    emitted = await service.emitted(order_id)
    assert [e.type for e in emitted] == [
        "payment.intent_created",
        "payment.intent_created",
        "payment.succeeded",
        "payment.refunded",
    ]
    assert emitted[2].data["attempt_id"] == str(first.id)
    assert emitted[3].data == {
        "order_id": order_id,
        "refund_id": str(refund.id),
        "attempt_id": str(second.id),
        "payment_intent_id": paid_second.id,
        "provider_refund_id": given_back.id,
        "amount": 5000,
        "currency": "EUR",
        "reason": "duplicate_capture",
        "automatic": True,
    }


async def test_two_successes_applied_at_once_still_keep_one(service, browser, events, checkout) -> None:
    """Both webhooks handled concurrently (two consumers during a rebalance, or the order's cancel racing the
    webhook): the order lock makes one the payment and the other a refunded duplicate."""
    order_id = str(uuid.uuid4())
    attempts = [await checkout.attempt(service, order_id, 2500) for _ in range(2)]
    paid = [await checkout.pay(service, a) for a in attempts]

    outcomes = await asyncio.gather(
        *(service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", p)) for p in paid)
    )

    assert outcomes == ["applied", "applied"]
    refunded = {p.id: sum(r.amount for r in await browser.refunds_of(p.id)) for p in paid}
    assert sorted(refunded.values()) == [0, 2500]
    emitted = await service.emitted(order_id)
    [succeeded] = [e for e in emitted if e.type == "payment.succeeded"]
    [refund] = [e for e in emitted if e.type == "payment.refunded"]
    assert refunded[succeeded.data["payment_intent_id"]] == 0
    assert refunded[refund.data["payment_intent_id"]] == 2500 and refund.data["automatic"] is True


async def test_a_second_authorization_is_released_not_announced(manual_service, browser, events, checkout) -> None:
    order_id = str(uuid.uuid4())
    first = await checkout.attempt(manual_service, order_id, 4000)
    second = await checkout.attempt(manual_service, order_id, 4000)

    held_first = await checkout.pay(manual_service, first, "payment_intent.amount_capturable_updated")
    held_second = await checkout.pay(manual_service, second, "payment_intent.amount_capturable_updated")

    assert (await browser.retrieve(held_first.id)).status == "requires_capture"
    assert (await browser.retrieve(held_second.id)).status == "canceled"
    rows = {r.id: r for r in await manual_service.attempts(order_id)}
    assert rows[first.id].state == A.AUTHORIZED
    assert (rows[second.id].state, rows[second.id].duplicate_of, rows[second.id].failure_code) == (
        A.CANCELED,
        first.id,
        "duplicate_authorization",
    )
    assert await manual_service.refunds(order_id) == []  # nothing was taken, so nothing is refunded
    emitted = await manual_service.emitted(order_id)
    assert [(e.type, e.data["attempt_id"]) for e in emitted[2:]] == [
        ("payment.authorized", str(first.id)),
        ("payment.canceled", str(second.id)),
    ]
