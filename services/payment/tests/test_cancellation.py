"""order.cancelled / order.expired against real PostgreSQL and the Stripe emulator: once an order closes, no
intent of it can take money, and money it already took is reported, never cancelled away."""

from __future__ import annotations

import uuid

import httpx
import pytest
import stripe

from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.store import attempts as repo
from handshake_shared.events import ORDER_EVENTS, PROVIDER_EVENTS
from handshake_shared.events.order import OrderPaymentRequested

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000341"


async def test_a_cancelled_order_leaves_no_intent_that_can_take_money(service, browser, events, checkout) -> None:
    order_id = str(uuid.uuid4())
    open_attempt = await checkout.attempt(service, order_id, 2000)
    declined_attempt = await checkout.attempt(service, order_id, 2000)
    declined = await browser.pay(declined_attempt.provider_intent_id, CARD_DECLINED)
    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.payment_failed", declined)) == "applied"
    # a third request whose process died after its attempt row, before Stripe was called
    unborn_request = events.requested(order_id, str(uuid.uuid4()), amount=2000)
    unborn = await service.graph.intents.record_attempt(
        unborn_request, OrderPaymentRequested.model_validate(unborn_request.data), uuid.UUID(order_id), "EUR"
    )

    cancelled = events.closed(order_id)
    assert await service.deliver(ORDER_EVENTS, cancelled) == "applied"

    for attempt in (open_attempt, declined_attempt):
        assert (await browser.retrieve(attempt.provider_intent_id)).status == "canceled"
    with pytest.raises(stripe.InvalidRequestError):
        await browser.pay(open_attempt.provider_intent_id, CARD_OK)
    # the request that died before Stripe, redelivered, creates nothing
    assert await service.deliver(ORDER_EVENTS, unborn_request) == "applied"
    assert {i.id for i in await browser.intents_for(order_id)} == {
        open_attempt.provider_intent_id,
        declined_attempt.provider_intent_id,
    }
    rows = await service.attempts(order_id)
    assert [(r.id, r.state, r.failure_code) for r in rows] == [
        (open_attempt.id, A.CANCELED, "order_cancelled"),
        (declined_attempt.id, A.CANCELED, "order_cancelled"),
        (unborn.id, A.CANCELED, "order_cancelled"),
    ]
    emitted = await service.emitted(order_id)
    canceled = {e.data["attempt_id"]: e.data["payment_intent_id"] for e in emitted if e.type == "payment.canceled"}
    assert canceled == {
        str(open_attempt.id): open_attempt.provider_intent_id,
        str(declined_attempt.id): declined_attempt.provider_intent_id,
        str(unborn.id): None,
    }

    # the same cancellation again (a lost inbox row): nothing more happens
    await service.forget(cancelled)
    assert await service.deliver(ORDER_EVENTS, cancelled) == "applied"
    assert await service.emitted(order_id) == emitted


async def test_a_creator_that_read_the_attempt_before_the_cancel_creates_no_intent(service, browser, events) -> None:
    """A second handler of the payment request (a rebalance) still holds the attempt as `creating`."""
    order_id = str(uuid.uuid4())
    request = events.requested(order_id, str(uuid.uuid4()), amount=1200)
    stale = await service.graph.intents.record_attempt(
        request, OrderPaymentRequested.model_validate(request.data), uuid.UUID(order_id), "EUR"
    )
    assert await service.deliver(ORDER_EVENTS, events.closed(order_id)) == "applied"

    after, refusal = await service.graph.intents.create_intent(stale)

    assert refusal is None
    assert (after.state, after.provider_intent_id) == (A.CANCELED, None)
    assert await browser.intents_for(order_id) == []


async def test_a_payment_that_landed_before_the_expiry_is_reported_not_cancelled(
    service, browser, events, checkout
) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 3100)
    paid = await checkout.pay(service, attempt)  # Stripe's webhook has not arrived yet

    assert (
        await service.deliver(ORDER_EVENTS, events.closed(order_id, "order.expired", "reservation expired"))
        == "applied"
    )

    assert (await browser.retrieve(paid.id)).status == "succeeded"
    assert await browser.refunds_of(paid.id) == []
    [row] = await service.attempts(order_id)
    assert (row.state, row.amount_captured) == (A.SUCCEEDED, 3100)
    emitted = await service.emitted(order_id)
    assert [e.type for e in emitted] == ["payment.intent_created", "payment.succeeded"]
    assert (emitted[1].data["amount"], emitted[1].data["currency"]) == (3100, "EUR")
    # the webhook arriving afterwards announces nothing twice
    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"
    assert await service.emitted(order_id) == emitted


async def test_an_authorization_is_released_when_the_order_is_cancelled(
    manual_service, browser, events, checkout
) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(manual_service, order_id, 4500)
    held = await checkout.pay(manual_service, attempt, "payment_intent.amount_capturable_updated")
    assert held.status == "requires_capture"

    assert await manual_service.deliver(ORDER_EVENTS, events.closed(order_id)) == "applied"

    released = await browser.retrieve(held.id)
    assert released.status == "canceled"
    assert await browser.refunds_of(held.id) == []  # nothing was ever taken, so nothing needs refunding
    assert [r.state for r in await manual_service.attempts(order_id)] == [A.CANCELED]
    assert [e.type for e in await manual_service.emitted(order_id)] == [
        "payment.intent_created",
        "payment.authorized",
        "payment.canceled",
    ]


async def test_an_intent_cancelled_before_it_was_announced_is_never_handed_out(service, http, browser, events) -> None:
    """The process stored the intent (recovery point 2) but never announced it; then the order closed."""
    order_id = str(uuid.uuid4())
    request = events.requested(order_id, str(uuid.uuid4()), amount=1800)
    recorded = await service.graph.intents.record_attempt(
        request, OrderPaymentRequested.model_validate(request.data), uuid.UUID(order_id), "EUR"
    )
    stored, _ = await service.graph.intents.create_intent(recorded)

    assert await service.deliver(ORDER_EVENTS, events.closed(order_id)) == "applied"
    assert await service.deliver(ORDER_EVENTS, request) == "applied"  # the request redelivered announces nothing

    assert (await browser.retrieve(stored.provider_intent_id)).status == "canceled"
    [row] = await service.attempts(order_id)
    assert row.state == A.CANCELED
    internal = {"Authorization": "Bearer " + service.settings.internal_api_tokens[0].get_secret_value()}
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://payment:{service.settings.internal_http_port}"
    ) as client:
        assert (
            await client.get(f"/internal/v1/orders/{order_id}/payment-session", headers=internal)
        ).status_code == 404
    assert [e.type for e in await service.emitted(order_id)] == ["payment.canceled"]


async def test_an_intent_made_for_an_attempt_the_order_cancelled_meanwhile_is_cancelled_by_reconciliation(
    service, browser, events
) -> None:
    """A creator took the lease before the cancel, Stripe made the intent, its id was stored, and the process
    died before cancelling it: the row's recovery point says a phase is left, and reconciliation runs it."""
    order_id = str(uuid.uuid4())
    request = events.requested(order_id, str(uuid.uuid4()), amount=1300)
    recorded = await service.graph.intents.record_attempt(
        request, OrderPaymentRequested.model_validate(request.data), uuid.UUID(order_id), "EUR"
    )
    assert await service.deliver(ORDER_EVENTS, events.closed(order_id)) == "applied"
    made = await service.app.state.gateway.create_intent(
        attempt_id=str(recorded.id),
        order_id=order_id,
        amount=1300,
        currency="EUR",
        idempotency_key=f"handshake-attempt-{recorded.id}-create-intent",
    )
    async with service.db.transaction() as tx:
        assert await repo.store_intent(tx, recorded.id, made.id)
    [row] = await service.attempts(order_id)
    assert (row.state, row.provider_intent_id, row.recovery_point) == (A.CANCELED, made.id, "intent_stored")

    run = await service.app.state.reconciler.run_once()

    assert (run["checked"], run["errors"]) == (1, 0)
    assert (await browser.retrieve(made.id)).status == "canceled"
    [row] = await service.attempts(order_id)
    assert (row.state, row.recovery_point) == (A.CANCELED, "finished")
    assert [e.type for e in await service.emitted(order_id)] == ["payment.canceled"]
    assert (await service.app.state.reconciler.run_once())["checked"] == 0


@pytest.mark.parametrize(
    ("dies_at", "paid_first"),
    [("requested", False), ("closed_at_provider", False), ("closed_at_provider", True)],
)
async def test_a_cancel_that_died_half_way_is_finished_by_reconciliation_once(
    faulty_service, faults, browser, events, checkout, dies_after, dies_at, paid_first
) -> None:
    """The process handling the order's expiry dies after a phase, and on every retry (it is dead-lettered):
    after the cancel was recorded, or after the provider cancelled the intent (or showed it paid). Reconciliation
    finishes it from the point the row names: the intent is cancelled at the provider exactly once and the
    attempt cancelled with the order's reason, or a payment that landed first is recorded and announced, never
    cancelled and never refunded."""
    service = faulty_service
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 2200)
    intent_id = attempt.provider_intent_id
    if paid_first:
        assert (await checkout.pay(service, attempt)).status == "succeeded"  # its webhook has not arrived
    expired = events.closed(order_id, "order.expired", "reservation expired")

    with dies_after(service.graph.cancel.closing, dies_at):
        assert await service.deliver(ORDER_EVENTS, expired) == "dead_lettered"

    [row] = await service.attempts(order_id)
    assert (row.state, row.cancel_point, row.cancel_code) == (A.REQUIRES_PAYMENT, dies_at, "order_expired")
    at_provider = (
        "succeeded" if paid_first else "canceled" if dies_at == "closed_at_provider" else "requires_payment_method"
    )
    assert (await browser.retrieve(intent_id)).status == at_provider

    run = await service.app.state.reconciler.run_once()

    assert (run["repaired"], run["errors"]) == (1, 0)
    assert faults.count("POST", f"/v1/payment_intents/{intent_id}/cancel") == (0 if paid_first else 1)
    [row] = await service.attempts(order_id)
    payment_events = [e for e in await service.emitted(order_id) if e.type.startswith("payment.")]
    if paid_first:
        assert (await browser.retrieve(intent_id)).status == "succeeded"
        assert await browser.refunds_of(intent_id) == []
        assert (row.state, row.amount_captured, row.cancel_point) == (A.SUCCEEDED, 2200, "finished")
        assert [e.type for e in payment_events] == ["payment.intent_created", "payment.succeeded"]
    else:
        assert (await browser.retrieve(intent_id)).status == "canceled"
        assert (row.state, row.failure_code, row.failure_message, row.cancel_point) == (
            A.CANCELED,
            "order_expired",
            "reservation expired",
            "finished",
        )
        assert [e.type for e in payment_events] == ["payment.intent_created", "payment.canceled"]
        assert payment_events[1].data["failure_code"] == "order_expired"

    assert (await service.app.state.reconciler.run_once())["checked"] == 0
    await service.forget(expired)
    assert await service.deliver(ORDER_EVENTS, expired) == "applied"  # applied again, it asks nothing more
    assert faults.count("POST", f"/v1/payment_intents/{intent_id}/cancel") == (0 if paid_first else 1)
    assert len([e for e in await service.emitted(order_id) if e.type.startswith("payment.")]) == 2
