"""Manual capture (HANDSHAKE_CAPTURE_METHOD=manual) against the Stripe emulator: intents only authorize,
order.capture_requested takes the money once, a refused capture releases the hold."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from handshake_payment.domain import ledger as L
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


INTENTS = "/v1/payment_intents"


async def announced(service, order_id: str) -> list[tuple[str, int | None]]:
    """What payment announced about the order (the outbox also holds a dead-lettered request's copy)."""
    return [(e.type, e.data.get("amount")) for e in await service.emitted(order_id) if e.type.startswith("payment.")]


@pytest.mark.parametrize("dies_at", ["requested", "captured_unrecorded", "settled_at_provider"])
async def test_a_capture_that_died_half_way_is_finished_by_reconciliation_with_one_capture(
    manual_faulty_service, faults, browser, events, checkout, dies_after, dies_at
) -> None:
    """The process handling the request dies after a phase, and again on every retry (the request is
    dead-lettered): after the request was recorded, after the provider captured but before that was written,
    or after it was written. Reconciliation finishes the capture from the point the row names: the money is
    captured exactly once, for the amount the order asked, and announced once."""
    service = manual_faulty_service
    capture = service.graph.capture
    order_id, attempt, held = await authorized(service, checkout, 10000)
    request = events.capture(order_id, attempt, amount=6000)  # partial: the amount travels on the row

    with dies_after(capture.capturing, "requested" if dies_at == "captured_unrecorded" else dies_at):
        assert await service.deliver(ORDER_EVENTS, request) == "dead_lettered"
    if dies_at == "captured_unrecorded":  # what the process did at the provider just before it died
        key = L.capture_key(attempt.id)
        await service.app.state.gateway.capture_intent(held.id, amount=6000, idempotency_key=key)

    [row] = await service.attempts(order_id)
    point = "requested" if dies_at == "captured_unrecorded" else dies_at
    assert (row.state, row.capture_point, row.capture_amount) == (A.AUTHORIZED, point, 6000)
    assert faults.count("POST", f"{INTENTS}/{held.id}/capture") == (0 if dies_at == "requested" else 1)

    run = await service.app.state.reconciler.run_once()

    assert (run["checked"], run["repaired"], run["errors"]) == (1, 1, 0)
    assert faults.count("POST", f"{INTENTS}/{held.id}/capture") == 1
    assert (await browser.retrieve(held.id)).status == "succeeded"
    # the emulator books what was held and not captured as a refund of its own: 6000 of 10000 were taken
    assert [r.amount for r in await browser.refunds_of(held.id)] == [4000]
    [row] = await service.attempts(order_id)
    assert (row.state, row.amount_captured, row.capture_point) == (A.SUCCEEDED, 6000, "finished")
    assert await announced(service, order_id) == [
        ("payment.intent_created", 10000),
        ("payment.authorized", 10000),
        ("payment.succeeded", 6000),
    ]

    # nothing is left for the next run, and the request applied again (a dead letter replayed) asks nothing
    assert (await service.app.state.reconciler.run_once())["checked"] == 0
    await service.forget(request)
    assert await service.deliver(ORDER_EVENTS, request) == "applied"
    assert faults.count("POST", f"{INTENTS}/{held.id}/capture") == 1
    assert len(await announced(service, order_id)) == 3


async def test_a_refused_capture_that_died_before_it_was_recorded_keeps_the_providers_reason(
    manual_faulty_service, faults, browser, events, checkout, dies_after
) -> None:
    """The provider refused the capture and the authorization was released; the process died before recording
    it. Reconciliation records capture_failed with the provider's reason (kept on the row with the point), not
    the bare "intent canceled" the intent now shows, and announces it once."""
    service = manual_faulty_service
    order_id, attempt, held = await authorized(service, checkout, 5000)

    with dies_after(service.graph.capture.capturing, "settled_at_provider"):
        assert await service.deliver(ORDER_EVENTS, events.capture(order_id, attempt, amount=5100)) == "dead_lettered"

    assert (await browser.retrieve(held.id)).status == "canceled"
    [row] = await service.attempts(order_id)
    refused_with = row.failure_code
    assert (row.state, row.capture_point) == (A.AUTHORIZED, "settled_at_provider")
    assert refused_with is not None and refused_with != "intent_canceled"

    run = await service.app.state.reconciler.run_once()

    assert (run["repaired"], run["errors"]) == (1, 0)
    assert faults.count("POST", f"{INTENTS}/{held.id}/capture") == 1
    [row] = await service.attempts(order_id)
    assert (row.state, row.failure_code, row.capture_point) == (A.CAPTURE_FAILED, refused_with, "finished")
    assert [t for t, _ in await announced(service, order_id)] == [
        "payment.intent_created",
        "payment.authorized",
        "payment.capture_failed",
    ]
    assert (await service.app.state.reconciler.run_once())["checked"] == 0
