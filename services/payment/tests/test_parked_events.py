"""Order-independent processing: provider events about a PaymentIntent no attempt knows yet are parked and
applied, through the live webhook path, once an attempt stores the intent; and any permutation with any
duplicates of what a provider sends about one paid intent ends in the same attempt and the same facts.

The intents are real (created and paid at the emulator). An event can only be unknown when it overtakes
recovery point 2: here the intent is created at the emulator (with the attempt's metadata, as a handler that
crashed after the create would leave it) before the attempt row is visible, and the request that creates the
row then finds that intent by metadata (its first create is on record) and stores it."""

from __future__ import annotations

import time
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from payment_test_provider_signing import forwarded  # loaded by conftest
from sqlalchemy import insert, select

from handshake_payment.db import parked_provider_events, payment_attempts
from handshake_payment.domain.attempts import AttemptState as A
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import ORDER_EVENTS, PROVIDER_EVENTS

CARD_OK = "4242424242424242"


def provider_event(provider_type: str, obj: dict[str, Any], order_id: str, created: int) -> CloudEvent:
    """provider.stripe.event as webhook-ingest forwards it, for a PaymentIntent snapshot Stripe signed."""
    return forwarded(provider_type, obj, key=order_id, created=created)


def dispute_event(intent_id: str, order_id: str, amount: int, created: int) -> CloudEvent:
    dispute = {
        "id": "dp_" + uuid.uuid4().hex[:14],
        "object": "dispute",
        "charge": "ch_" + uuid.uuid4().hex[:14],
        "payment_intent": intent_id,
        "amount": amount,
        "currency": "eur",
        "reason": "fraudulent",
        "status": "needs_response",
    }
    return forwarded("charge.dispute.created", dispute, key=order_id, created=created, sequence=2)


class Unborn:
    """An attempt whose PaymentIntent exists (and is paid) at the emulator before the attempt row does."""

    def __init__(self, service, browser, amount: int) -> None:
        self.service, self.browser, self.amount = service, browser, amount
        self.order_id = str(uuid.uuid4())
        self.request_id = str(uuid.uuid4())
        self.attempt_id = uuid.uuid4()

    async def pay_at_provider(self) -> Any:
        intent = await self.browser.client.v1.payment_intents.create_async(
            params={
                "amount": self.amount,
                "currency": "eur",
                "metadata": {"attempt_id": str(self.attempt_id), "order_id": self.order_id},
            }
        )
        paid = await self.browser.pay(intent.id, CARD_OK)
        assert paid.status == "succeeded"
        return paid

    async def request(self, events) -> str:
        """Phase 1 (the row, whose first intent create is on record) then the payment request itself."""
        async with self.service.db.transaction() as tx:
            await tx.execute(
                insert(payment_attempts).values(
                    id=self.attempt_id,
                    order_id=uuid.UUID(self.order_id),
                    request_id=self.request_id,
                    amount=self.amount,
                    currency="EUR",
                    state=A.CREATING,
                    intent_create_calls=1,
                )
            )
        return await self.service.deliver(
            ORDER_EVENTS, events.requested(self.order_id, self.request_id, amount=self.amount)
        )

    async def attempt(self) -> Any:
        [attempt] = await self.service.attempts(self.order_id)
        return attempt

    async def types(self) -> list[str]:
        return [e.type for e in await self.service.emitted(self.order_id)]


async def parked_rows(service, intent_id: str) -> list[Any]:
    async with service.db.engine.connect() as conn:
        query = select(parked_provider_events).where(parked_provider_events.c.payment_intent_id == intent_id)
        return list((await conn.execute(query.order_by(parked_provider_events.c.id))).all())


async def test_a_success_before_the_intent_is_stored_is_parked_then_applied_once(service, browser, events) -> None:
    unborn = Unborn(service, browser, 4100)
    paid = await unborn.pay_at_provider()
    succeeded = provider_event("payment_intent.succeeded", paid.to_dict(), unborn.order_id, int(time.time()))

    # no attempt holds (or can adopt) the intent yet: kept, nothing announced
    assert await service.deliver(PROVIDER_EVENTS, succeeded) == "applied"
    [row] = await parked_rows(service, paid.id)
    assert (row.type, row.applied_at) == ("payment_intent.succeeded", None)
    assert await unborn.types() == []

    # the attempt stores the intent (recovery point 2): the parked success is applied as a webhook would be
    assert await unborn.request(events) == "applied"
    attempt = await unborn.attempt()
    assert (attempt.state, attempt.provider_intent_id) == (A.SUCCEEDED, paid.id)
    assert (await unborn.types()).count("payment.succeeded") == 1
    assert "payment.failed" not in await unborn.types()
    [row] = await parked_rows(service, paid.id)
    assert row.applied_at is not None
    audit = await service.audit(attempt.id)
    assert audit[-1] == ("creating", "succeeded")

    # applying again, the request redelivered, the event redelivered or sent again: nothing changes
    before = await unborn.types()
    assert await service.graph.intake.apply_parked(paid.id) == 0
    await service.forget(events.requested(unborn.order_id, unborn.request_id, amount=4100))
    assert (
        await service.deliver(ORDER_EVENTS, events.requested(unborn.order_id, unborn.request_id, amount=4100))
        == "applied"
    )
    assert await service.deliver(PROVIDER_EVENTS, succeeded) == "duplicate"
    await service.forget(succeeded)
    assert await service.deliver(PROVIDER_EVENTS, succeeded) == "applied"
    assert await unborn.types() == before
    assert (await unborn.attempt()).state == A.SUCCEEDED
    assert await service.audit(attempt.id) == audit


async def test_a_dispute_before_the_intent_is_known_is_announced_once_it_is(service, browser, events) -> None:
    unborn = Unborn(service, browser, 5200)
    paid = await unborn.pay_at_provider()
    now = int(time.time())
    dispute = dispute_event(paid.id, unborn.order_id, 5200, now + 1)

    assert await service.deliver(PROVIDER_EVENTS, dispute) == "applied"
    assert [r.type for r in await parked_rows(service, paid.id)] == ["charge.dispute.created"]
    assert await unborn.types() == []

    assert await unborn.request(events) == "applied"
    assert (await unborn.types()).count("payment.disputed") == 1
    attempt = await unborn.attempt()
    disputed = next(e for e in await service.emitted(unborn.order_id) if e.type == "payment.disputed")
    assert disputed.data["attempt_id"] == str(attempt.id)
    assert disputed.data["payment_intent_id"] == paid.id

    # the success Stripe sent too arrives late and live; the dispute is never announced again
    assert (
        await service.deliver(
            PROVIDER_EVENTS, provider_event("payment_intent.succeeded", paid.to_dict(), unborn.order_id, now)
        )
        == "applied"
    )
    assert await service.graph.intake.apply_parked(paid.id) == 0
    types = await unborn.types()
    assert (types.count("payment.disputed"), types.count("payment.succeeded")) == (1, 1)
    assert (await unborn.attempt()).state == A.SUCCEEDED


async def test_parked_events_are_applied_in_the_providers_order_when_an_intent_is_adopted(
    service, browser, events
) -> None:
    """A dispute and a processing event parked before the success whose metadata adopts the intent."""
    unborn = Unborn(service, browser, 3300)
    paid = await unborn.pay_at_provider()
    now = int(time.time())
    processing = provider_event(
        "payment_intent.processing", {**paid.to_dict(), "status": "processing"}, unborn.order_id, now - 5
    )
    dispute = dispute_event(paid.id, unborn.order_id, 3300, now + 5)
    assert await service.deliver(PROVIDER_EVENTS, dispute) == "applied"
    assert await service.deliver(PROVIDER_EVENTS, processing) == "applied"  # its attempt does not exist yet
    assert len(await parked_rows(service, paid.id)) == 2

    async with service.db.transaction() as tx:  # phase 1 committed, the handler crashed before any create
        await tx.execute(
            insert(payment_attempts).values(
                id=unborn.attempt_id,
                order_id=uuid.UUID(unborn.order_id),
                request_id=unborn.request_id,
                amount=3300,
                currency="EUR",
                state=A.CREATING,
            )
        )
    succeeded = provider_event("payment_intent.succeeded", paid.to_dict(), unborn.order_id, now)
    assert await service.deliver(PROVIDER_EVENTS, succeeded) == "applied"

    attempt = await unborn.attempt()
    assert (attempt.state, attempt.provider_intent_id) == (A.SUCCEEDED, paid.id)
    assert [to for _, to in await service.audit(attempt.id)] == ["processing", "succeeded"]
    assert await unborn.types() == ["payment.disputed", "payment.succeeded"]
    assert all(r.applied_at is not None for r in await parked_rows(service, paid.id))


# -- any order, any duplicates -------------------------------------------------------------------------

KINDS = ["processing", "failed_first_try", "succeeded", "dispute"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    known_first=st.booleans(),
)
async def test_any_order_and_duplication_of_a_paid_intents_events_ends_the_same(
    service, browser, events, data, known_first: bool
) -> None:
    """What a provider could send about one paid intent: processing, an old payment_failed from a first
    decline, the success, a dispute. Delivered in any order with duplicates (a redelivered message, the
    same provider event again after a lost inbox row), before or after the attempt knows the intent."""
    unborn = Unborn(service, browser, 2700)
    paid = await unborn.pay_at_provider()
    obj = paid.to_dict()
    now = int(time.time())
    declined = {
        **obj,
        "status": "requires_payment_method",
        "amount_received": 0,
        "last_payment_error": {
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    }
    built = {
        "failed_first_try": provider_event("payment_intent.payment_failed", declined, unborn.order_id, now - 20),
        "processing": provider_event(
            "payment_intent.processing", {**obj, "status": "processing"}, unborn.order_id, now - 10
        ),
        "succeeded": provider_event("payment_intent.succeeded", obj, unborn.order_id, now),
        "dispute": dispute_event(paid.id, unborn.order_id, 2700, now + 10),
    }
    kinds = data.draw(st.lists(st.sampled_from(KINDS), min_size=1, unique=True).map(lambda k: [*k, "succeeded"]))
    kinds = sorted(set(kinds))
    order = data.draw(st.permutations(kinds))
    dupes = data.draw(st.lists(st.tuples(st.sampled_from(kinds), st.booleans()), max_size=4))
    deliveries = list(order)
    for kind, _ in dupes:
        deliveries.insert(data.draw(st.integers(0, len(deliveries))), kind)
    forget_before = {i for i, (kind, forget) in enumerate(dupes) if forget}

    if known_first:
        assert await unborn.request(events) == "applied"
    seen: set[str] = set()
    for i, kind in enumerate(deliveries):
        event = built[kind]
        if kind in seen and i in forget_before:
            await service.forget(event)  # the same provider event id in a second delivery
        outcome = await service.deliver(PROVIDER_EVENTS, event)
        assert outcome in ("applied", "duplicate")
        seen.add(kind)
    if not known_first:
        assert await unborn.request(events) == "applied"
    assert await service.graph.intake.apply_parked(paid.id) == 0

    attempt = await unborn.attempt()
    assert (attempt.state, attempt.provider_intent_id) == (A.SUCCEEDED, paid.id)
    types = await unborn.types()
    assert types.count("payment.succeeded") == 1
    assert types.count("payment.disputed") == (1 if "dispute" in kinds else 0)
    assert "payment.canceled" not in types
    # a decline heard before the success is news at the time (the customer then paid with another card);
    # heard after it, it is stale and refused: never a failure after the success, at most one at all
    after_success = types[types.index("payment.succeeded") + 1 :]
    assert "payment.failed" not in after_success and types.count("payment.failed") <= 1
    assert set(types) - {"payment.failed", "payment.intent_created"} == (
        {"payment.succeeded", "payment.disputed"} if "dispute" in kinds else {"payment.succeeded"}
    )
    assert all(r.applied_at is not None for r in await parked_rows(service, paid.id))
