"""At most one captured attempt per order: a second attempt that also took (or held) money gives it back on
its own, against the Stripe emulator through the real SDK."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, NamedTuple

import pytest
import stripe

from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.refunds import automatic_refund_id
from handshake_shared.envelope import CloudEvent
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


def payment_events(emitted) -> list[tuple[str, str]]:
    """What payment announced, by type and attempt (the outbox also holds a dead-lettered event's copy)."""
    return [(e.type, e.data["attempt_id"]) for e in emitted if e.type.startswith("payment.")]


class SecondHolder(NamedTuple):
    order_id: str
    first: Any
    second: Any
    second_intent: stripe.PaymentIntent
    second_event: CloudEvent


async def second_holder_dying(
    service, checkout, events, dies_after, dies_at: str, *, amount: int, held: str
) -> SecondHolder:
    """Two attempts of one order: the first holds its money (`held` is the webhook Stripe sends then), and
    the second's same webhook is handled by a process that dies once giving the second's money back is at
    `dies_at`, and on every retry: the event is dead-lettered half way."""
    order_id = str(uuid.uuid4())
    first = await checkout.attempt(service, order_id, amount)
    second = await checkout.attempt(service, order_id, amount)
    await checkout.pay(service, first, held)
    second_intent = await checkout.pay(service, second)
    second_event = events.stripe(held, second_intent)
    with dies_after(service.graph.holding.giving_back, dies_at):
        assert await service.deliver(PROVIDER_EVENTS, second_event) == "dead_lettered"
    return SecondHolder(order_id, first, second, second_intent, second_event)


@pytest.mark.parametrize("dies_at", ["marked_duplicate", "given_back"])
async def test_a_second_capture_whose_give_back_died_half_way_is_refunded_once_by_reconciliation(
    faulty_service, faults, browser, events, checkout, dies_after, dies_at
) -> None:
    """The process handling the second success dies after the duplicate was marked (its refund row written),
    or after the provider refunded it, and on every retry. Reconciliation finishes the give-back from the
    row's point: the customer gets the second payment back exactly once, and it is announced once."""
    service = faulty_service
    order_id, first, second, paid_second, second_paid = await second_holder_dying(
        service, checkout, events, dies_after, dies_at, amount=5000, held="payment_intent.succeeded"
    )

    rows = {r.id: r for r in await service.attempts(order_id)}
    assert (rows[second.id].state, rows[second.id].duplicate_of, rows[second.id].give_back_point) == (
        A.SUCCEEDED,
        first.id,
        dies_at,
    )
    assert len(await browser.refunds_of(paid_second.id)) == (1 if dies_at == "given_back" else 0)

    run = await service.app.state.reconciler.run_once()

    assert (run["repaired"], run["errors"]) == (1, 0)
    [given_back] = await browser.refunds_of(paid_second.id)
    assert (given_back.amount, given_back.metadata["refund_id"]) == (5000, str(automatic_refund_id(second.id)))
    assert faults.count("POST", "/v1/refunds") == 1
    assert await browser.refunds_of(first.provider_intent_id) == []
    [refund] = await service.refunds(order_id)
    assert (refund.state, refund.provider_refund_id, refund.recovery_point) == ("succeeded", given_back.id, "finished")
    assert {r.id: r.give_back_point for r in await service.attempts(order_id)} == {
        first.id: None,
        second.id: "finished",
    }
    announced = payment_events(await service.emitted(order_id))
    assert announced[2:] == [("payment.succeeded", str(first.id)), ("payment.refunded", str(second.id))]

    assert (await service.app.state.reconciler.run_once())["checked"] == 0
    await service.forget(second_paid)
    assert await service.deliver(PROVIDER_EVENTS, second_paid) == "applied"  # applied again: nothing more
    assert len(await browser.refunds_of(paid_second.id)) == 1
    assert payment_events(await service.emitted(order_id)) == announced


@pytest.mark.parametrize("dies_at", ["marked_duplicate", "given_back"])
async def test_a_second_authorization_whose_release_died_half_way_is_released_once_by_reconciliation(
    manual_faulty_service, faults, browser, events, checkout, dies_after, dies_at
) -> None:
    """The same for a second authorization: released at the provider exactly once, announced cancelled once,
    never announced as the order's payment."""
    service = manual_faulty_service
    order_id, first, second, held_second, _ = await second_holder_dying(
        service, checkout, events, dies_after, dies_at, amount=4000, held="payment_intent.amount_capturable_updated"
    )

    [row] = [r for r in await service.attempts(order_id) if r.id == second.id]
    assert (row.state, row.duplicate_of, row.give_back_point) == (A.AUTHORIZED, first.id, dies_at)
    released = "canceled" if dies_at == "given_back" else "requires_capture"
    assert (await browser.retrieve(held_second.id)).status == released

    run = await service.app.state.reconciler.run_once()

    assert (run["repaired"], run["errors"]) == (1, 0)
    assert (await browser.retrieve(held_second.id)).status == "canceled"
    assert (await browser.retrieve(first.provider_intent_id)).status == "requires_capture"
    assert faults.count("POST", f"/v1/payment_intents/{held_second.id}/cancel") == 1
    rows = {r.id: r for r in await service.attempts(order_id)}
    assert (rows[second.id].state, rows[second.id].failure_code, rows[second.id].give_back_point) == (
        A.CANCELED,
        "duplicate_authorization",
        "finished",
    )
    assert rows[first.id].state == A.AUTHORIZED
    announced = payment_events(await service.emitted(order_id))
    assert announced[2:] == [("payment.authorized", str(first.id)), ("payment.canceled", str(second.id))]
    # the next run looks at the held first authorization only, and finds nothing to do
    again = await service.app.state.reconciler.run_once()
    assert (again["checked"], again["repaired"], again["errors"]) == (1, 0, 0)
    assert faults.count("POST", f"/v1/payment_intents/{held_second.id}/cancel") == 1
    assert payment_events(await service.emitted(order_id)) == announced
