"""Provider facts (provider.stripe.event) built from real PaymentIntents that a browser paid in the emulator."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text

from handshake_devstack.testing.fixtures import eventually, isolated_kafka_settings, serve_in_process
from handshake_payment.app import create_app
from handshake_payment.domain.attempts import AttemptState as A
from handshake_shared.envelope import CloudEvent, parse_event
from handshake_shared.events import ORDER_EVENTS, PAYMENT_EVENTS, PROVIDER_EVENTS

CARD_OK = "4242424242424242"
# localstripe declines a PaymentIntent charge only for 4000000000000341 and two 3-D Secure numbers; Stripe's
# generic decline 4000000000000002 is refused by localstripe only when attached to a customer, and a
# PaymentIntent confirmed with it succeeds
CARD_DECLINED = "4000000000000341"


async def publish(producer: AIOKafkaProducer, topic: str, event: CloudEvent) -> None:
    headers = [(k, v.encode()) for k, v in event.kafka_headers().items()]
    await producer.send_and_wait(topic, event.to_bytes(), key=event.subject.encode(), headers=headers)


async def published(
    bootstrap: str, topic: str, order_id: str, types: set[str], timeout: float = 10.0
) -> list[CloudEvent]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[CloudEvent] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while {e.type for e in found} < types and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found += [parse_event(r.value) for r in records if r.key == order_id.encode()]
    finally:
        await consumer.stop()
    return found


async def test_a_browser_payment_through_the_broker_succeeds_the_attempt_exactly_once(
    service, browser, events, stack
) -> None:
    bootstrap = stack.broker.bootstrap_servers
    order_id = str(uuid.uuid4())
    # its own consumer groups and a short session: joining a group another test just left waits less
    app = create_app(service.settings.model_copy(update=isolated_kafka_settings(stack)))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with serve_in_process(app):
            await publish(producer, ORDER_EVENTS, events.requested(order_id, str(uuid.uuid4()), amount=7450))

            async def intent_ready() -> Any:
                rows = await service.attempts(order_id)
                return rows[0] if rows and rows[0].state == A.REQUIRES_PAYMENT else None

            attempt = await eventually(intent_ready)
            paid = await browser.pay(attempt.provider_intent_id, CARD_OK)
            assert paid.status == "succeeded"

            succeeded = events.stripe("payment_intent.succeeded", paid)
            await publish(producer, PROVIDER_EVENTS, succeeded)

            async def attempt_succeeded() -> bool:
                return (await service.attempts(order_id))[0].state == A.SUCCEEDED

            await eventually(attempt_succeeded)

            # the same message redelivered, and Stripe sending the same event again in a new envelope
            again = events.stripe("payment_intent.succeeded", paid)
            await publish(producer, PROVIDER_EVENTS, succeeded)
            await publish(producer, PROVIDER_EVENTS, again)

            async def again_handled() -> bool:
                async with service.db.engine.connect() as conn:
                    row = await conn.execute(text("SELECT 1 FROM inbox WHERE event_id = :id"), {"id": again.id})
                    return row.first() is not None

            await eventually(again_handled)
            on_topic = await published(
                bootstrap, PAYMENT_EVENTS, order_id, {"payment.intent_created", "payment.succeeded"}
            )
    finally:
        await producer.stop()

    [attempt] = await service.attempts(order_id)
    assert attempt.state == A.SUCCEEDED
    assert await service.audit(attempt.id) == [
        (None, "creating"),
        ("creating", "requires_payment"),
        ("requires_payment", "succeeded"),
    ]
    outbox = await service.emitted(order_id)
    assert [e.type for e in outbox] == ["payment.intent_created", "payment.succeeded"]
    assert outbox[1].data == {
        "order_id": order_id,
        "attempt_id": str(attempt.id),
        "payment_intent_id": paid.id,
        "amount": paid.amount,
        "currency": "EUR",
    }
    assert paid.amount == 7450
    # the relay published both, in order, keyed by the order
    assert [e.type for e in on_topic] == ["payment.intent_created", "payment.succeeded"]


async def requested_and_created(service, events, order_id: str, amount: int = 3000) -> Any:
    assert (
        await service.deliver(ORDER_EVENTS, events.requested(order_id, str(uuid.uuid4()), amount=amount)) == "applied"
    )
    [attempt] = await service.attempts(order_id)
    return attempt


async def test_a_declined_card_fails_the_attempt_with_the_providers_reason(service, browser, events) -> None:
    order_id = str(uuid.uuid4())
    attempt = await requested_and_created(service, events, order_id)
    declined = await browser.pay(attempt.provider_intent_id, CARD_DECLINED)
    assert declined.status == "requires_payment_method"

    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.payment_failed", declined)) == "applied"

    [attempt] = await service.attempts(order_id)
    assert (attempt.state, attempt.failure_code) == (A.FAILED, "card_declined")
    failed = (await service.emitted(order_id))[-1]
    assert failed.type == "payment.failed"
    assert failed.data["payment_intent_id"] == declined.id
    assert failed.data["failure_code"] == "card_declined"
    assert failed.data["failure_message"] == "Your card was declined."


async def test_a_retry_with_another_card_after_a_decline_is_recorded_as_paid(service, browser, events) -> None:
    """Stripe keeps a declined intent open for another card; money that lands on it afterwards is the truth.
    localstripe cannot confirm an intent twice, so the success is the event Stripe would then send."""
    order_id = str(uuid.uuid4())
    attempt = await requested_and_created(service, events, order_id)
    declined = await browser.pay(attempt.provider_intent_id, CARD_DECLINED)
    await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.payment_failed", declined))
    paid = _Obj({**declined.to_dict(), "status": "succeeded", "last_payment_error": None})

    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"

    assert (await service.attempts(order_id))[0].state == A.SUCCEEDED
    assert [e.type for e in await service.emitted(order_id)] == [
        "payment.intent_created",
        "payment.failed",
        "payment.succeeded",
    ]


async def test_a_late_decline_never_unpays_a_succeeded_attempt(service, browser, events) -> None:
    order_id = str(uuid.uuid4())
    attempt = await requested_and_created(service, events, order_id)
    paid = await browser.pay(attempt.provider_intent_id, CARD_OK)
    await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid))
    stale = {
        **paid.to_dict(),
        "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined", "message": "late"},
    }

    assert (
        await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.payment_failed", _Obj(stale))) == "applied"
    )

    assert (await service.attempts(order_id))[0].state == A.SUCCEEDED
    assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created", "payment.succeeded"]


async def test_a_canceled_intent_cancels_the_attempt(service, browser, events) -> None:
    order_id = str(uuid.uuid4())
    attempt = await requested_and_created(service, events, order_id)
    canceled = await browser.client.v1.payment_intents.cancel_async(attempt.provider_intent_id)

    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.canceled", canceled)) == "applied"

    assert (await service.attempts(order_id))[0].state == A.CANCELED
    last = (await service.emitted(order_id))[-1]
    assert (last.type, last.data["payment_intent_id"]) == ("payment.canceled", canceled.id)


async def test_an_intent_created_before_a_crash_is_adopted_from_its_metadata(service, browser, events) -> None:
    """The process died after Stripe created the intent but before its id was stored (recovery point 2 not
    reached), and the customer paid anyway: the attempt named in the metadata takes the payment."""
    order_id = str(uuid.uuid4())
    attempt = await requested_and_created(service, events, order_id)
    async with service.db.transaction() as conn:
        await conn.execute(
            text(
                "UPDATE payment_attempts SET provider_intent_id = NULL, state = 'creating', "
                "recovery_point = 'recorded' WHERE id = :id"
            ),
            {"id": attempt.id},
        )
    paid = await browser.pay(attempt.provider_intent_id, CARD_OK)

    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"

    [after] = await service.attempts(order_id)
    assert (after.state, after.provider_intent_id) == (A.SUCCEEDED, paid.id)


async def test_an_event_for_an_unknown_intent_is_recorded_and_changes_nothing(service, browser, events) -> None:
    """An intent someone created outside Handshake (dashboard, another system on the same account)."""
    foreign = await browser.client.v1.payment_intents.create_async(
        params={"amount": 999, "currency": "eur", "metadata": {"order_id": str(uuid.uuid4())}}
    )
    event = events.stripe("payment_intent.succeeded", foreign)

    assert await service.deliver(PROVIDER_EVENTS, event) == "applied"
    assert await service.deliver(PROVIDER_EVENTS, event) == "duplicate"
    assert await service.emitted(foreign.metadata["order_id"]) == []


async def test_other_provider_event_types_are_ignored(service, browser, events) -> None:
    order_id = str(uuid.uuid4())
    attempt = await requested_and_created(service, events, order_id)
    intent = await browser.retrieve(attempt.provider_intent_id)

    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.created", intent)) == "applied"

    assert (await service.attempts(order_id))[0].state == A.REQUIRES_PAYMENT
    assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created"]


class _Obj:
    """A PaymentIntent-shaped snapshot for events the emulator cannot produce (a second confirm, a stale
    decline arriving after the success)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self, for_json: bool = False) -> dict[str, Any]:
        return dict(self.data)
