"""order.payment_requested against real PostgreSQL and the Stripe emulator through the real SDK.

The emulator ignores Idempotency-Key, so every "exactly one PaymentIntent" here is our own doing."""

from __future__ import annotations

import asyncio
import uuid

from handshake_payment.domain.attempts import AttemptState as A
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import ORDER_EVENTS
from handshake_shared.events.order import OrderPaymentRequested


async def test_a_payment_request_creates_one_attempt_and_one_matching_intent(service, browser, events) -> None:
    order_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    event = events.requested(order_id, request_id, amount=4321, currency="EUR")

    assert await service.deliver(ORDER_EVENTS, event) == "applied"

    [attempt] = await service.attempts(order_id)
    [intent] = await browser.intents_for(order_id)
    assert (intent.amount, intent.currency) == (4321, "eur")
    assert intent.metadata.to_dict() == {"order_id": order_id, "attempt_id": str(attempt.id)}
    assert (attempt.request_id, attempt.state, attempt.provider_intent_id) == (
        request_id,
        A.REQUIRES_PAYMENT,
        intent.id,
    )
    assert await service.audit(attempt.id) == [(None, "creating"), ("creating", "requires_payment")]
    [announced] = await service.emitted(order_id)
    assert announced.type == "payment.intent_created"
    assert announced.causationid == str(event.id)
    assert announced.data == {
        "order_id": order_id,
        "attempt_id": str(attempt.id),
        "payment_intent_id": intent.id,
        "amount": 4321,
        "currency": "EUR",
    }


async def test_redelivered_and_replayed_requests_never_create_a_second_intent(service, browser, events) -> None:
    order_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    event = events.requested(order_id, request_id, amount=1500)
    assert await service.deliver(ORDER_EVENTS, event) == "applied"

    # the broker redelivers the same message: the inbox answers
    assert await service.deliver(ORDER_EVENTS, event) == "duplicate"
    # the inbox row is gone (replay from an old offset into a restored database): the handler runs again
    await service.forget(event)
    assert await service.deliver(ORDER_EVENTS, event) == "applied"
    # the order service re-emits the same request in a new envelope
    assert await service.deliver(ORDER_EVENTS, events.requested(order_id, request_id, amount=1500)) == "applied"

    assert len(await browser.intents_for(order_id)) == 1
    assert len(await service.attempts(order_id)) == 1
    assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created"]


async def test_concurrent_deliveries_of_one_request_create_one_intent(service, browser, events) -> None:
    """Two consumers briefly own the partition during a rebalance: the creation lease lets one call Stripe."""
    order_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    outcomes = await asyncio.gather(
        *(service.deliver(ORDER_EVENTS, events.requested(order_id, request_id, amount=990)) for _ in range(3))
    )
    assert outcomes == ["applied"] * 3
    assert len(await browser.intents_for(order_id)) == 1
    assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created"]


async def test_recovery_point_1_a_crash_after_the_attempt_resumes_with_the_same_attempt(
    service, browser, events
) -> None:
    order_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    event = events.requested(order_id, request_id, amount=2500)
    # phase 1 committed, then the process died before calling Stripe
    before = await service.graph.intents.record_attempt(event, event_payload(event), uuid.UUID(order_id), "EUR")
    assert (before.state, before.provider_intent_id) == (A.CREATING, None)

    assert await service.deliver(ORDER_EVENTS, event) == "applied"

    [attempt] = await service.attempts(order_id)
    [intent] = await browser.intents_for(order_id)
    assert attempt.id == before.id
    assert intent.metadata["attempt_id"] == str(before.id)
    assert attempt.state == A.REQUIRES_PAYMENT


async def test_recovery_point_2_a_crash_after_the_intent_only_announces_it(service, browser, events) -> None:
    order_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    event = events.requested(order_id, request_id, amount=2600)
    # phases 1 and 2 committed (the intent id is stored), then the process died before announcing it
    recorded = await service.graph.intents.record_attempt(event, event_payload(event), uuid.UUID(order_id), "EUR")
    stored, refusal = await service.graph.intents.create_intent(recorded)
    assert refusal is None and stored.state == A.CREATING and stored.provider_intent_id

    assert await service.deliver(ORDER_EVENTS, event) == "applied"

    [intent] = await browser.intents_for(order_id)
    assert intent.id == stored.provider_intent_id
    [announced] = await service.emitted(order_id)
    assert announced.data["payment_intent_id"] == stored.provider_intent_id


async def test_a_request_stripe_refuses_fails_the_attempt_and_says_so(service, browser, events) -> None:
    """A zero total (everything discounted) cannot be charged: Stripe answers 400, which no retry can fix."""
    order_id = str(uuid.uuid4())
    assert await service.deliver(ORDER_EVENTS, events.requested(order_id, str(uuid.uuid4()), amount=0)) == "applied"

    [attempt] = await service.attempts(order_id)
    assert (attempt.state, attempt.provider_intent_id, attempt.locked_at) == (A.FAILED, None, None)
    assert await browser.intents_for(order_id) == []
    [failed] = await service.emitted(order_id)
    assert failed.type == "payment.failed"
    assert failed.data["attempt_id"] == str(attempt.id)


def event_payload(event: CloudEvent) -> OrderPaymentRequested:
    return OrderPaymentRequested.model_validate(event.data)


async def test_each_phase_of_a_payment_request_leaves_its_recovery_point_on_the_row(service, browser, events) -> None:
    """Where a request stopped is written on the attempt, not read off its state and intent id: a redelivery
    and reconciliation resume from it."""
    order_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    event = events.requested(order_id, request_id, amount=2700)

    recorded = await service.graph.intents.record_attempt(event, event_payload(event), uuid.UUID(order_id), "EUR")
    assert (recorded.state, recorded.recovery_point) == (A.CREATING, "recorded")
    stored, _ = await service.graph.intents.create_intent(recorded)
    assert (stored.state, stored.recovery_point) == (A.CREATING, "intent_stored")
    assert await service.deliver(ORDER_EVENTS, event) == "applied"

    [attempt] = await service.attempts(order_id)
    assert (attempt.state, attempt.recovery_point) == (A.REQUIRES_PAYMENT, "finished")
    assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created"]
