"""Manual capture (HANDSHAKE_CAPTURE_METHOD=manual) against the Stripe emulator: intents only authorize,
order.capture_requested takes the money once, a refused capture releases the hold."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from handshake_payment.domain.attempts import AttemptState as A
from handshake_shared.events import ORDER_EVENTS, PROVIDER_EVENTS


def captures_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("handshake_payment_captures_total", {"outcome": outcome}) or 0.0


async def authorized(service, checkout, amount: int):
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, amount)
    held = await checkout.pay(service, attempt, "payment_intent.amount_capturable_updated")
    assert held.status == "requires_capture"
    [attempt] = await service.attempts(order_id)
    assert attempt.state == A.AUTHORIZED
    return order_id, attempt, held


async def test_an_authorization_is_captured_once_on_the_orders_request(
    manual_service, browser, events, checkout
) -> None:
    order_id, attempt, held = await authorized(manual_service, checkout, 8800)
    assert held.capture_method == "manual"
    [announced_hold] = [e for e in await manual_service.emitted(order_id) if e.type == "payment.authorized"]
    assert (announced_hold.data["amount"], announced_hold.data["payment_intent_id"]) == (8800, held.id)
    captured_before = captures_counted("captured")
    request = events.capture(order_id, attempt)

    assert await manual_service.deliver(ORDER_EVENTS, request) == "applied"

    captured = await browser.retrieve(held.id)
    assert captured.status == "succeeded"
    [row] = await manual_service.attempts(order_id)
    assert (row.state, row.amount_captured) == (A.SUCCEEDED, 8800)
    assert captures_counted("captured") == captured_before + 1
    emitted = await manual_service.emitted(order_id)
    assert [e.type for e in emitted] == ["payment.intent_created", "payment.authorized", "payment.succeeded"]
    assert (emitted[2].data["amount"], emitted[2].data["attempt_id"]) == (8800, str(attempt.id))

    # Stripe's payment_intent.succeeded after the capture, and the request redelivered: nothing twice
    assert (
        await manual_service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", captured)) == "applied"
    )
    await manual_service.forget(request)
    assert await manual_service.deliver(ORDER_EVENTS, request) == "applied"
    assert await manual_service.emitted(order_id) == emitted
    assert await manual_service.audit(attempt.id) == [
        (None, "creating"),
        ("creating", "requires_payment"),
        ("requires_payment", "authorized"),
        ("authorized", "succeeded"),
    ]


async def test_a_refused_capture_releases_the_authorization(manual_service, browser, events, checkout) -> None:
    order_id, attempt, held = await authorized(manual_service, checkout, 5000)

    # more than is held: Stripe refuses amount_to_capture above amount_capturable
    assert await manual_service.deliver(ORDER_EVENTS, events.capture(order_id, attempt, amount=5100)) == "applied"

    assert (await browser.retrieve(held.id)).status == "canceled"
    [row] = await manual_service.attempts(order_id)
    assert (row.state, row.amount_captured) == (A.CAPTURE_FAILED, None)
    failed = (await manual_service.emitted(order_id))[-1]
    assert (failed.type, failed.data["attempt_id"], failed.data["payment_intent_id"]) == (
        "payment.capture_failed",
        str(attempt.id),
        held.id,
    )
    assert "payment.succeeded" not in [e.type for e in await manual_service.emitted(order_id)]


async def test_an_expired_authorization_is_not_captured(manual_service, browser, events, checkout) -> None:
    """Stripe cancels an authorization nobody captured within 7 days."""
    order_id, attempt, held = await authorized(manual_service, checkout, 2900)
    await browser.client.v1.payment_intents.cancel_async(held.id)

    assert await manual_service.deliver(ORDER_EVENTS, events.capture(order_id, attempt)) == "applied"

    assert (await browser.retrieve(held.id)).status == "canceled"
    [row] = await manual_service.attempts(order_id)
    assert (row.state, row.failure_code) == (A.CAPTURE_FAILED, "intent_canceled")
    assert [e.type for e in await manual_service.emitted(order_id)][-1] == "payment.capture_failed"


async def test_a_partial_capture_bounds_later_refunds(manual_service, browser, events, checkout) -> None:
    """Capturing less than was held (a line could not be shipped): refunds are checked against what was taken."""
    order_id, attempt, held = await authorized(manual_service, checkout, 10000)

    assert await manual_service.deliver(ORDER_EVENTS, events.capture(order_id, attempt, amount=6000)) == "applied"
    assert await manual_service.deliver(ORDER_EVENTS, events.refund(order_id, 6500)) == "applied"
    assert await manual_service.deliver(ORDER_EVENTS, events.refund(order_id, 6000)) == "applied"

    [row] = await manual_service.attempts(order_id)
    assert (row.state, row.amount_captured) == (A.SUCCEEDED, 6000)
    assert [(r.amount, r.state) for r in await manual_service.refunds(order_id)] == [
        (6500, "failed"),
        (6000, "succeeded"),
    ]
    # the emulator books the uncaptured 4000 as a refund of its own (no metadata); ours is the one tagged
    ours = [r for r in await browser.refunds_of(held.id) if r.metadata.to_dict().get("order_id") == order_id]
    assert [r.amount for r in ours] == [6000]
    answers = [(e.type, e.data["amount"]) for e in await manual_service.emitted(order_id)][2:]
    assert answers == [("payment.succeeded", 6000), ("payment.refund_failed", 6500), ("payment.refunded", 6000)]
