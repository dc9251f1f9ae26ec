"""Provider faults between the service and Stripe, injected by a proxy (tests/faults.py) in front of the
emulator: answers lost after the provider acted, late answers, 500 and 429 bursts. The emulator ignores
idempotency keys, so whatever stays single here is single by our own doing. Never a second PaymentIntent per
attempt, never a second refund per refund request."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from handshake_payment.domain.attempts import AttemptState as A
from handshake_shared.consumer import InfrastructureUnavailable
from handshake_shared.events import ORDER_EVENTS, PROVIDER_EVENTS

CARD_OK = "4242424242424242"
INTENTS = "/v1/payment_intents"
REFUNDS = "/v1/refunds"


def recovered_intents() -> float:
    return REGISTRY.get_sample_value("handshake_payment_intents_recovered_total") or 0.0


async def requested(service, events, order_id: str, amount: int):
    request = events.requested(order_id, str(uuid.uuid4()), amount)
    return request, await service.deliver(ORDER_EVENTS, request)


async def test_an_intent_created_but_its_answer_lost_is_found_not_created_again(
    faulty_service, faults, browser, events
) -> None:
    service = faulty_service
    order_id = str(uuid.uuid4())
    faults.add("drop", "POST", INTENTS)  # Stripe creates it; the answer never reaches us
    before = recovered_intents()

    request, outcome = await requested(service, events, order_id, 3100)

    assert outcome == "applied"
    [made] = await browser.intents_for(order_id)
    [attempt] = await service.attempts(order_id)
    assert (attempt.state, attempt.provider_intent_id, made.metadata["attempt_id"]) == (
        A.REQUIRES_PAYMENT,
        made.id,
        str(attempt.id),
    )
    assert (made.amount, made.currency) == (3100, "eur")
    assert faults.count("POST", INTENTS) == 1 and faults.count("POST", INTENTS, "drop") == 1
    assert recovered_intents() == before + 1
    [created] = await service.emitted(order_id)
    assert (created.type, created.data["payment_intent_id"]) == ("payment.intent_created", made.id)

    # the request redelivered (lost inbox row) and re-sent: still the one intent
    await service.forget(request)
    assert await service.deliver(ORDER_EVENTS, request) == "applied"
    assert [i.id for i in await browser.intents_for(order_id)] == [made.id]
    assert faults.count("POST", INTENTS) == 1
    # and it is the one the customer pays
    paid = await browser.pay(made.id, CARD_OK)
    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"
    assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created", "payment.succeeded"]


async def test_a_lost_answer_and_a_failing_lookup_are_retried_into_one_intent(
    faulty_service, faults, browser, events
) -> None:
    """The create's answer is lost and the look-up that follows fails too (503s): the handler raises, the
    consumer retries it, and the retry looks first (a second provider call for the attempt) and finds it."""
    service = faulty_service
    order_id = str(uuid.uuid4())
    faults.add("drop", "POST", INTENTS)
    faults.add("status", "GET", INTENTS, status=503, times=2)  # the SDK's own retry of the list fails too

    _, outcome = await requested(service, events, order_id, 2700)

    assert outcome == "applied"
    [made] = await browser.intents_for(order_id)
    [attempt] = await service.attempts(order_id)
    assert (attempt.provider_intent_id, attempt.intent_create_calls) == (made.id, 2)
    assert faults.count("POST", INTENTS) == 1
    assert faults.count("GET", INTENTS, "status") == 2


async def test_an_answer_later_than_the_client_timeout_is_found_not_created_again(
    faulty_service, faults, browser, events
) -> None:
    service = faulty_service
    order_id = str(uuid.uuid4())
    faults.add("late", "POST", INTENTS, seconds=2.0)  # acted at once, answered after our 1 s timeout

    _, outcome = await requested(service, events, order_id, 1900)

    assert outcome == "applied"
    [made] = await browser.intents_for(order_id)
    assert (await service.attempts(order_id))[0].provider_intent_id == made.id
    assert faults.count("POST", INTENTS) == 1


@pytest.mark.parametrize("status", [500, 429])
async def test_a_burst_of_provider_errors_is_retried_into_one_intent(
    faulty_service, faults, browser, events, status
) -> None:
    """More failures than the consumer's in-process retries: the message is left for redelivery (not dead
    lettered), and the redelivery creates the one intent."""
    service = faulty_service
    order_id = str(uuid.uuid4())
    attempts = service.settings.consumer_max_attempts
    faults.add("status", "POST", INTENTS, status=status, times=attempts + 1)
    request = events.requested(order_id, str(uuid.uuid4()), 4400)

    with pytest.raises(InfrastructureUnavailable):
        await service.deliver(ORDER_EVENTS, request)
    [waiting] = await service.attempts(order_id)
    assert (waiting.state, waiting.provider_intent_id) == (A.CREATING, None)
    assert await browser.intents_for(order_id) == []
    assert await service.emitted(order_id) == []  # nothing announced, nothing dead-lettered

    assert await service.deliver(ORDER_EVENTS, request) == "applied"  # the broker brings it back

    [made] = await browser.intents_for(order_id)
    [attempt] = await service.attempts(order_id)
    assert (attempt.state, attempt.provider_intent_id) == (A.REQUIRES_PAYMENT, made.id)
    assert faults.count("POST", INTENTS, "status") == attempts + 1
    assert faults.count("POST", INTENTS, "forwarded") == 1
    assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created"]


async def _paid(service, events, browser, amount: int):
    order_id = str(uuid.uuid4())
    _, outcome = await requested(service, events, order_id, amount)
    assert outcome == "applied"
    [attempt] = await service.attempts(order_id)
    paid = await browser.pay(attempt.provider_intent_id, CARD_OK)
    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"
    return order_id, paid


async def test_a_refund_made_but_its_answer_lost_is_found_not_made_again(
    faulty_service, faults, browser, events
) -> None:
    service = faulty_service
    order_id, paid = await _paid(service, events, browser, 8000)
    faults.add("drop", "POST", REFUNDS)
    request = events.refund(order_id, 8000)

    assert await service.deliver(ORDER_EVENTS, request) == "applied"

    [made] = await browser.refunds_of(paid.id)
    assert (made.amount, made.metadata["refund_id"]) == (8000, request.data["refund_id"])
    [row] = await service.refunds(order_id)
    assert (row.state, row.provider_refund_id) == ("succeeded", made.id)
    assert faults.count("POST", REFUNDS) == 1
    await service.forget(request)
    assert await service.deliver(ORDER_EVENTS, request) == "applied"
    assert [r.id for r in await browser.refunds_of(paid.id)] == [made.id]
    assert [e.type for e in await service.emitted(order_id)].count("payment.refunded") == 1


async def test_a_refund_through_a_burst_of_rate_limits_is_made_once(faulty_service, faults, browser, events) -> None:
    service = faulty_service
    order_id, paid = await _paid(service, events, browser, 6000)
    faults.add("status", "POST", REFUNDS, status=429, times=3)
    faults.add("drop", "POST", REFUNDS)  # and when it finally goes through, its answer is lost
    request = events.refund(order_id, 2500)

    assert await service.deliver(ORDER_EVENTS, request) == "applied"

    [made] = await browser.refunds_of(paid.id)
    assert made.amount == 2500
    [row] = await service.refunds(order_id)
    assert (row.state, row.provider_refund_id) == ("succeeded", made.id)
    assert (faults.count("POST", REFUNDS, "status"), faults.count("POST", REFUNDS, "drop")) == (3, 1)
    [refunded] = [e for e in await service.emitted(order_id) if e.type == "payment.refunded"]
    assert (refunded.data["provider_refund_id"], refunded.data["amount"]) == (made.id, 2500)
