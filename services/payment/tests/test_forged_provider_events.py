"""Whoever can write to provider.events.v1 but holds neither the webhook signing secret nor the Stripe API key
cannot make payment record money: a provider event is applied only on the proof it carries (the delivery
Stripe signed) or on the provider's own copy of it, never on the fields written beside them. A refused
message is counted, dead-lettered (dead_letters + provider.events.v1.dlq) and changes nothing; the genuine
event still works."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from payment_test_provider_signing import WEBHOOK_SECRET, forwarded, sign, stripe_event_body  # loaded by conftest
from prometheus_client import REGISTRY
from sqlalchemy import text

from handshake_devstack.broker import EmbeddedBroker
from handshake_devstack.processes import free_port
from handshake_devstack.testing.fixtures import eventually, isolated_kafka_settings, serve_in_process
from handshake_payment.app import create_app
from handshake_payment.domain.attempts import AttemptState as A
from handshake_shared.consumer import InfrastructureUnavailable
from handshake_shared.envelope import CloudEvent, build_event
from handshake_shared.events import PAYMENT_EVENTS, PROVIDER_EVENTS, dlq_topic
from handshake_shared.events.provider import ProviderStripeEvent, seal_delivery

CARD_OK = "4242424242424242"
CONSUMER = "payment.provider-events"


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("handshake_provider_events_refused_total", {"reason": reason}) or 0.0


def plain_message(stripe_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> CloudEvent:
    """What any producer on the topic can write: a well-formed provider.stripe.event, with no proof."""
    event, _ = stripe_event_body(stripe_type, obj, event_id=event_id)
    payload = ProviderStripeEvent.of(event)
    return build_event(
        service="webhook-ingest",
        type="provider.stripe.event",
        order_id=payload.order_id or payload.provider_event_id,
        sequence=1,
        data=payload,
    )


def claimed_success(intent: Any) -> dict[str, Any]:
    """The customer's real, unpaid intent, described as paid."""
    return {**intent.to_dict(for_json=True), "status": "succeeded", "amount_received": intent.amount}


async def provider_success_event(browser, intent: Any) -> dict[str, Any]:
    """The emulator's own payment_intent.succeeded for this intent, as the events list (the gap scan's
    source) returns it: plain JSON."""
    params: dict[str, Any] = {"type": "payment_intent.succeeded", "limit": 100, "created": {"gte": intent.created - 5}}
    while True:
        page = json.loads((await browser.client.v1.events.list_async(params=params)).last_response.body)
        found = [e for e in page["data"] if e["data"]["object"]["id"] == intent.id]
        if found:
            return found[0]
        assert page["has_more"], f"the provider has no payment_intent.succeeded for {intent.id}"
        params["starting_after"] = page["data"][-1]["id"]


def gap_scan_message(provider_event: dict[str, Any], order_id: str) -> CloudEvent:
    """provider.stripe.event as webhook-ingest forwards an event its gap scan fetched: no signature exists."""
    return build_event(
        service="webhook-ingest",
        type="provider.stripe.event",
        order_id=order_id,
        sequence=1,
        data=ProviderStripeEvent.of(provider_event),
    )


async def rows(service, sql: str, **params: Any) -> list[Any]:
    async with service.db.engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def dead_letter(service, event: CloudEvent) -> Any:
    found = await rows(
        service, "SELECT consumer, topic, event_type, error FROM dead_letters WHERE event_id = :id", id=str(event.id)
    )
    return found[0] if found else None


async def dlq_messages(service, event: CloudEvent) -> list[Any]:
    return await rows(
        service,
        "SELECT payload, published_at FROM outbox WHERE topic = :t AND payload = :p",
        t=dlq_topic(PROVIDER_EVENTS),
        p=event.to_bytes(),
    )


async def unchanged(service, order_id: str, attempt: Any) -> None:
    """No attempt state change, no new transition, nothing announced but the intent."""
    [now] = await service.attempts(order_id)
    assert (now.state, now.provider_intent_id) == (A.REQUIRES_PAYMENT, attempt.provider_intent_id)
    assert await service.audit(attempt.id) == [(None, "creating"), ("creating", "requires_payment")]
    assert await payment_facts(service, order_id) == ["payment.intent_created"]


async def payment_facts(service, order_id: str) -> list[str]:
    """What payment.events.v1 says (or will say) about the order: what the order service would act on."""
    found = await rows(
        service,
        "SELECT event_type FROM outbox WHERE topic = :t AND message_key = :k ORDER BY id",
        t=PAYMENT_EVENTS,
        k=order_id,
    )
    return [r.event_type for r in found]


async def publish(producer: AIOKafkaProducer, event: CloudEvent) -> None:
    headers = [(k, v.encode()) for k, v in event.kafka_headers().items()]
    await producer.send_and_wait(PROVIDER_EVENTS, event.to_bytes(), key=event.subject.encode(), headers=headers)


@pytest.fixture
def own_broker(tmp_path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: on the session's broker the service would also read (and refuse, and
    count) every unsigned provider event earlier tests left on the topic, so the count could not be exact."""
    broker = EmbeddedBroker(free_port(), log_dir=tmp_path)
    broker.start()
    yield broker
    broker.stop()


async def test_a_success_put_on_the_topic_by_a_plain_producer_is_refused_dead_lettered_and_changes_nothing(
    service, browser, events, checkout, stack, own_broker
) -> None:
    order_id = str(uuid.uuid4())
    on_own_broker = {**isolated_kafka_settings(stack), "kafka_bootstrap_servers": own_broker.bootstrap_servers}
    app = create_app(service.settings.model_copy(update=on_own_broker))
    producer = AIOKafkaProducer(bootstrap_servers=own_broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        async with serve_in_process(app):
            attempt = await checkout.attempt(service, order_id, 5400)
            intent = await browser.retrieve(attempt.provider_intent_id)
            assert intent.status == "requires_payment_method"  # the customer has not paid
            before = refused("unknown_at_provider")

            forged = plain_message("payment_intent.succeeded", claimed_success(intent))
            await publish(producer, forged)

            letter = await eventually(lambda: dead_letter(service, forged))
            assert (letter.consumer, letter.topic, letter.event_type) == (
                CONSUMER,
                PROVIDER_EVENTS,
                "provider.stripe.event",
            )
            assert "unknown_at_provider" in letter.error
            # forwarded to provider.events.v1.dlq through the outbox, and published there
            [dlq] = await eventually(lambda: _published(service, forged))
            assert bytes(dlq.payload) == forged.to_bytes()
            assert refused("unknown_at_provider") == before + 1
            await unchanged(service, order_id, attempt)

            # the customer really pays and Stripe's signed delivery arrives: applied as always
            paid = await browser.pay(attempt.provider_intent_id, CARD_OK)
            await publish(producer, events.stripe("payment_intent.succeeded", paid))

            async def succeeded() -> bool:
                return (await service.attempts(order_id))[0].state == A.SUCCEEDED

            await eventually(succeeded)
    finally:
        await producer.stop()
    assert await payment_facts(service, order_id) == ["payment.intent_created", "payment.succeeded"]
    assert (await service.emitted(order_id))[-1].data["amount"] == 5400


async def _published(service, event: CloudEvent) -> list[Any]:
    return [m for m in await dlq_messages(service, event) if m.published_at is not None]


async def test_a_delivery_sealed_and_signed_with_a_secret_that_is_not_ours_is_refused(
    service, browser, checkout
) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 2100)
    intent = await browser.retrieve(attempt.provider_intent_id)
    before = refused("unsealed")

    forged = forwarded("payment_intent.succeeded", claimed_success(intent), key=order_id, secret="whsec_" + "x" * 32)

    assert await service.deliver(PROVIDER_EVENTS, forged) == "dead_lettered"
    assert refused("unsealed") == before + 1
    assert (await dead_letter(service, forged)).consumer == CONSUMER
    [queued] = await dlq_messages(service, forged)
    assert bytes(queued.payload) == forged.to_bytes()
    await unchanged(service, order_id, attempt)
    # dead-lettered once: the same message again is a duplicate, not a second dead letter
    assert await service.deliver(PROVIDER_EVENTS, forged) == "duplicate"
    assert len(await dlq_messages(service, forged)) == 1


async def test_a_body_changed_after_stripe_signed_it_is_refused(service, browser, checkout) -> None:
    """Sealing needs our secret, so only its holders could try this; payment checks Stripe's signature itself
    all the same, so a fault upstream of it cannot turn a signed event into another one."""
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 2200)
    intent = await browser.retrieve(attempt.provider_intent_id)
    _, body = stripe_event_body("payment_intent.created", intent.to_dict(for_json=True))
    header = sign(body)
    altered = body.replace(b'"payment_intent.created"', b'"payment_intent.succeeded"').replace(
        b'"requires_payment_method"', b'"succeeded"'
    )
    assert altered != body
    sealed = seal_delivery(altered, header, WEBHOOK_SECRET)
    payload = ProviderStripeEvent.of(json.loads(altered), signed_delivery=sealed)
    message = build_event(
        service="webhook-ingest", type="provider.stripe.event", order_id=order_id, sequence=1, data=payload
    )
    before = refused("signature_mismatch")

    assert await service.deliver(PROVIDER_EVENTS, message) == "dead_lettered"

    assert refused("signature_mismatch") == before + 1
    assert await dead_letter(service, message) is not None
    await unchanged(service, order_id, attempt)


async def test_fields_written_beside_a_genuine_proof_are_never_applied(service, browser, checkout) -> None:
    """A real signed delivery (payment_intent.created) copied from the topic, its fields rewritten to say
    the intent succeeded: only what Stripe signed is applied, and that moves no money."""
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 2300)
    intent = await browser.retrieve(attempt.provider_intent_id)
    genuine = forwarded("payment_intent.created", intent.to_dict(for_json=True), key=order_id)
    rewritten = genuine.model_copy(
        update={
            "id": uuid.uuid4(),
            "data": {
                **genuine.data,
                "provider_type": "payment_intent.succeeded",
                "status": "succeeded",
                "object": claimed_success(intent),
            },
        }
    )

    assert await service.deliver(PROVIDER_EVENTS, rewritten) == "applied"

    await unchanged(service, order_id, attempt)


async def test_an_unsigned_event_is_applied_only_as_the_provider_holds_it(service, browser, checkout) -> None:
    """Events the gap scan fetched carry no signature: payment retrieves each by id with its own API key and
    applies the provider's copy. A real event id under another order's claimed success moves nothing there."""
    paid_order, other_order = str(uuid.uuid4()), str(uuid.uuid4())
    paid_attempt = await checkout.attempt(service, paid_order, 3100)
    other_attempt = await checkout.attempt(service, other_order, 3100)
    paid = await browser.pay(paid_attempt.provider_intent_id, CARD_OK)
    provider_event = await provider_success_event(browser, paid)

    # the unpaid order's intent claimed paid under that real event id: the provider's copy is about the
    # other intent, and only that is applied
    other_intent = await browser.retrieve(other_attempt.provider_intent_id)
    hijacked = plain_message("payment_intent.succeeded", claimed_success(other_intent), event_id=provider_event["id"])
    assert await service.deliver(PROVIDER_EVENTS, hijacked) == "applied"
    await unchanged(service, other_order, other_attempt)
    [applied] = await service.attempts(paid_order)
    assert applied.state == A.SUCCEEDED  # the event that id really names

    # the event itself, as the gap scan forwards it (no signature): applied from the provider's copy
    payment_order = str(uuid.uuid4())
    attempt = await checkout.attempt(service, payment_order, 4700)
    intent = await browser.pay(attempt.provider_intent_id, CARD_OK)
    from_gap_scan = gap_scan_message(await provider_success_event(browser, intent), payment_order)
    assert await service.deliver(PROVIDER_EVENTS, from_gap_scan) == "applied"
    [done] = await service.attempts(payment_order)
    assert done.state == A.SUCCEEDED
    assert await payment_facts(service, payment_order) == ["payment.intent_created", "payment.succeeded"]

    # an id the provider never issued is refused
    before = refused("unknown_at_provider")
    invented = plain_message("payment_intent.succeeded", claimed_success(other_intent))
    assert await service.deliver(PROVIDER_EVENTS, invented) == "dead_lettered"
    assert refused("unknown_at_provider") == before + 1
    await unchanged(service, other_order, other_attempt)


async def test_a_provider_outage_while_an_unsigned_event_is_confirmed_leaves_it_on_the_broker(
    faulty_service, faults, browser, checkout
) -> None:
    service = faulty_service
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 3900)
    paid = await browser.pay(attempt.provider_intent_id, CARD_OK)
    message = gap_scan_message(await provider_success_event(browser, paid), order_id)
    rule = faults.add("status", "GET", "/v1/events", status=503, times=1000)

    with pytest.raises(InfrastructureUnavailable):
        await service.deliver(PROVIDER_EVENTS, message)

    assert await dead_letter(service, message) is None
    assert await dlq_messages(service, message) == []
    assert (await service.attempts(order_id))[0].state == A.REQUIRES_PAYMENT
    rule.times = rule.hits  # the provider is back
    assert await service.deliver(PROVIDER_EVENTS, message) == "applied"  # the broker brings it back
    assert (await service.attempts(order_id))[0].state == A.SUCCEEDED
