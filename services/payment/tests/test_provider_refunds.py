"""Refunds made at the provider outside Handshake (as the Stripe dashboard makes them): the refund is made at
the emulator with the SDK, and charge.refunded carries the real Charge (with its refunds) retrieved from it."""

from __future__ import annotations

import time
import uuid
from typing import Any

from payment_test_provider_signing import forwarded  # loaded by conftest
from prometheus_client import REGISTRY
from sqlalchemy import insert, select

from handshake_payment.db import parked_provider_events, payment_attempts
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.provider_events.refunds import provider_refund_row_id
from handshake_shared.envelope import CloudEvent
from handshake_shared.events import ORDER_EVENTS, PROVIDER_EVENTS

CARD_OK = "4242424242424242"


async def charge_of(browser, intent_id: str) -> dict[str, Any]:
    """The intent's Charge as the provider holds it now, refunds included."""
    intent = await browser.retrieve(intent_id)
    latest = intent.to_dict().get("latest_charge")
    charge_id = latest if isinstance(latest, str) else latest["id"]
    charge = await browser.client.v1.charges.retrieve_async(charge_id)
    return charge.to_dict(for_json=True)


def charge_refunded(charge: dict[str, Any], order_id: str | None = None, created: int | None = None) -> CloudEvent:
    """provider.stripe.event for charge.refunded as webhook-ingest forwards it."""
    return forwarded("charge.refunded", charge, key=order_id or str(uuid.uuid4()), created=created, sequence=3)


async def deliver_charge_refunded(service, browser, intent_id: str, order_id: str) -> str:
    """charge.refunded with the Charge as the provider holds it now, through the provider consumer."""
    return await service.deliver(PROVIDER_EVENTS, charge_refunded(await charge_of(browser, intent_id), order_id))


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("handshake_payment_provider_refunds_total", {"outcome": outcome}) or 0.0


async def refund_at_dashboard(browser, charge_id: str, amount: int) -> Any:
    return await browser.client.v1.refunds.create_async(params={"charge": charge_id, "amount": amount})


async def test_a_dashboard_refund_is_recorded_and_announced_once(service, browser, checkout) -> None:
    order_id, attempt, paid = await checkout.paid(service, 8000)
    made = await refund_at_dashboard(browser, (await charge_of(browser, paid.id))["id"], 3000)
    charge = await charge_of(browser, paid.id)
    assert charge["payment_intent"] == paid.id and charge["amount_refunded"] == 3000
    assert [r["id"] for r in charge["refunds"]["data"]] == [made.id]
    event = charge_refunded(charge, order_id)

    assert await service.deliver(PROVIDER_EVENTS, event) == "applied"

    [row] = await service.refunds(order_id)
    assert (
        row.id,
        row.attempt_id,
        row.amount,
        row.currency,
        row.state,
        row.provider_refund_id,
        row.automatic,
        row.requested_by,
        row.reason,
    ) == (
        provider_refund_row_id(made.id),
        attempt.id,
        3000,
        "EUR",
        "succeeded",
        made.id,
        False,
        "provider",
        "refunded at the provider",
    )
    refunded = [e for e in await service.emitted(order_id) if e.type == "payment.refunded"]
    assert [e.data for e in refunded] == [
        {
            "order_id": order_id,
            "refund_id": str(row.id),
            "attempt_id": str(attempt.id),
            "payment_intent_id": paid.id,
            "provider_refund_id": made.id,
            "amount": 3000,
            "currency": "EUR",
            "reason": "refunded at the provider",
            "automatic": False,
        }
    ]
    assert (await service.attempts(order_id))[0].state == A.SUCCEEDED

    # redelivered (inbox), replayed past the inbox, and a new provider event naming the same refund
    assert await service.deliver(PROVIDER_EVENTS, event) == "duplicate"
    await service.forget(event)
    assert await service.deliver(PROVIDER_EVENTS, event) == "applied"
    assert await service.deliver(PROVIDER_EVENTS, charge_refunded(charge, order_id)) == "applied"
    assert [r.id for r in await service.refunds(order_id)] == [row.id]
    assert [e.type for e in await service.emitted(order_id)].count("payment.refunded") == 1
    # no money moved by us
    assert [r.id for r in await browser.refunds_of(paid.id)] == [made.id]


async def test_a_second_dashboard_refund_is_recorded_beside_the_first(service, browser, checkout) -> None:
    """charge.refunded lists every refund of the charge: only the new one is recorded."""
    order_id, _, paid = await checkout.paid(service, 5000)
    charge_id = (await charge_of(browser, paid.id))["id"]
    first = await refund_at_dashboard(browser, charge_id, 1000)
    assert await deliver_charge_refunded(service, browser, paid.id, order_id) == "applied"
    second = await refund_at_dashboard(browser, charge_id, 4000)

    assert await deliver_charge_refunded(service, browser, paid.id, order_id) == "applied"

    assert sorted((r.provider_refund_id, r.amount) for r in await service.refunds(order_id)) == sorted(
        [(first.id, 1000), (second.id, 4000)]
    )
    assert [
        (e.data["provider_refund_id"], e.data["amount"])
        for e in await service.emitted(order_id)
        if e.type == "payment.refunded"
    ] == [(first.id, 1000), (second.id, 4000)]


async def test_a_refund_we_made_is_not_announced_again(service, browser, events, checkout) -> None:
    order_id, _, paid = await checkout.paid(service, 6000)
    request = events.refund(order_id, 2500)
    assert await service.deliver(ORDER_EVENTS, request) == "applied"
    [ours] = await browser.refunds_of(paid.id)
    assert ours.metadata.to_dict()["refund_id"] == request.data["refund_id"]
    ours_before = counted("ours")

    assert await deliver_charge_refunded(service, browser, paid.id, order_id) == "applied"

    [row] = await service.refunds(order_id)
    assert (str(row.id), row.provider_refund_id, row.requested_by) == (request.data["refund_id"], ours.id, "agent-7")
    assert [e.type for e in await service.emitted(order_id)].count("payment.refunded") == 1
    assert counted("ours") == ours_before + 1


async def test_a_refund_of_ours_not_stored_yet_is_left_to_the_refund_path(service, browser, checkout) -> None:
    """Between the provider call and storing its id (recovery point 2) only the metadata says it is ours."""
    order_id, _, paid = await checkout.paid(service, 6000)
    await browser.client.v1.refunds.create_async(
        params={
            "payment_intent": paid.id,
            "amount": 2000,
            "metadata": {"order_id": order_id, "refund_id": str(uuid.uuid4())},
        }
    )

    assert await deliver_charge_refunded(service, browser, paid.id, order_id) == "applied"

    assert await service.refunds(order_id) == []
    assert "payment.refunded" not in [e.type for e in await service.emitted(order_id)]


async def test_a_refund_beyond_the_recorded_capture_is_flagged_not_recorded(service, browser, events, checkout) -> None:
    """Stripe never refunds above the charge, but our rows may already hold the capture (an order refund in
    flight): the recorded sum never exceeds the capture."""
    order_id, _attempt, paid = await checkout.paid(service, 4000)
    assert await service.deliver(ORDER_EVENTS, events.refund(order_id, 4000)) == "applied"
    charge = await charge_of(browser, paid.id)
    foreign = {
        "id": "re_" + uuid.uuid4().hex[:14],
        "object": "refund",
        "amount": 500,
        "currency": "eur",
        "status": "succeeded",
        "metadata": {},
        "charge": charge["id"],
        "payment_intent": paid.id,
    }
    charge["refunds"]["data"].append(foreign)
    before = counted("exceeds_capture")

    assert await service.deliver(PROVIDER_EVENTS, charge_refunded(charge, order_id)) == "applied"

    assert sum(r.amount for r in await service.refunds(order_id)) == 4000
    assert [e.type for e in await service.emitted(order_id)].count("payment.refunded") == 1
    assert counted("exceeds_capture") == before + 1


async def test_a_refund_created_event_is_recorded_like_charge_refunded(service, browser, checkout) -> None:
    order_id, attempt, paid = await checkout.paid(service, 3000)
    made = await browser.client.v1.refunds.create_async(params={"payment_intent": paid.id, "amount": 1200})
    refund = made.to_dict(for_json=True)
    event = forwarded("refund.created", refund, key=order_id, sequence=3)

    assert await service.deliver(PROVIDER_EVENTS, event) == "applied"
    # the same refund in charge.refunded later: nothing new
    assert await deliver_charge_refunded(service, browser, paid.id, order_id) == "applied"

    [row] = await service.refunds(order_id)
    assert (row.provider_refund_id, row.amount, row.attempt_id) == (made.id, 1200, attempt.id)
    assert [e.type for e in await service.emitted(order_id)].count("payment.refunded") == 1


async def test_a_refund_of_an_unknown_intent_is_parked_then_applied(service, browser, events) -> None:
    """The charge.refunded overtakes recovery point 2 (as in test_parked_events): parked, then applied after
    the parked success once the attempt stores the intent."""
    order_id, request_id, attempt_id = str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4()
    intent = await browser.client.v1.payment_intents.create_async(
        params={
            "amount": 9000,
            "currency": "eur",
            "metadata": {"attempt_id": str(attempt_id), "order_id": order_id},
        }
    )
    paid = await browser.pay(intent.id, CARD_OK)
    made = await refund_at_dashboard(browser, (await charge_of(browser, paid.id))["id"], 9000)
    succeeded = events.stripe("payment_intent.succeeded", paid)
    # the provider made the success before the refund
    refunded = charge_refunded(await charge_of(browser, paid.id), order_id, created=int(time.time()) + 5)

    assert await service.deliver(PROVIDER_EVENTS, refunded) == "applied"
    assert await service.deliver(PROVIDER_EVENTS, succeeded) == "applied"
    async with service.db.engine.connect() as conn:
        parked = (
            await conn.execute(
                select(parked_provider_events.c.type)
                .where(parked_provider_events.c.payment_intent_id == paid.id)
                .order_by(parked_provider_events.c.id)
            )
        ).all()
    assert [r.type for r in parked] == ["charge.refunded", "payment_intent.succeeded"]
    assert await service.refunds(order_id) == []

    # the attempt (its first intent create on record) stores the intent it finds by metadata
    async with service.db.transaction() as tx:
        await tx.execute(
            insert(payment_attempts).values(
                id=attempt_id,
                order_id=uuid.UUID(order_id),
                request_id=request_id,
                amount=9000,
                currency="EUR",
                state=A.CREATING,
                intent_create_calls=1,
            )
        )
    assert await service.deliver(ORDER_EVENTS, events.requested(order_id, request_id, amount=9000)) == "applied"

    [attempt] = await service.attempts(order_id)
    assert (attempt.state, attempt.provider_intent_id) == (A.SUCCEEDED, paid.id)
    [row] = await service.refunds(order_id)
    assert (row.provider_refund_id, row.amount, row.state, row.attempt_id) == (
        made.id,
        9000,
        "succeeded",
        attempt_id,
    )
    types = [e.type for e in await service.emitted(order_id)]
    assert types.count("payment.succeeded") == 1 and types.count("payment.refunded") == 1
    assert types.index("payment.succeeded") < types.index("payment.refunded")
    # applied once: delivering it again changes nothing
    await service.forget(refunded)
    assert await service.deliver(PROVIDER_EVENTS, refunded) == "applied"
    assert len(await service.refunds(order_id)) == 1


def refund_event(stripe_type: str, refund: dict[str, Any], order_id: str) -> CloudEvent:
    """provider.stripe.event for a Refund object (refund.failed, refund.updated, charge.refund.updated)."""
    return forwarded(stripe_type, refund, key=order_id, sequence=4)


async def test_a_refund_that_fails_after_it_was_accepted_is_reversed_and_can_be_made_again(
    service, browser, events, checkout
) -> None:
    """Stripe accepted our refund, then the bank refused it (the emulator never fails a refund: the Refund is
    the real one, with the status and failure_reason Stripe then reports). The customer is owed the money
    again: the refund stops counting, the order is told once, and a new refund of it is made."""
    order_id, attempt, paid = await checkout.paid(service, 6000)
    request = events.refund(order_id, 6000)
    assert await service.deliver(ORDER_EVENTS, request) == "applied"
    [accepted] = await browser.refunds_of(paid.id)
    failed = {**accepted.to_dict(for_json=True), "status": "failed", "failure_reason": "expired_or_canceled_card"}
    reversals_before = REGISTRY.get_sample_value("handshake_payment_refund_reversals_total") or 0.0

    assert await service.deliver(PROVIDER_EVENTS, refund_event("refund.failed", failed, order_id)) == "applied"

    [row] = await service.refunds(order_id)
    assert (str(row.id), row.state, row.failure_code) == (
        request.data["refund_id"],
        "reversed",
        "expired_or_canceled_card",
    )
    reversed_ = [e for e in await service.emitted(order_id) if e.type == "payment.refund_reversed"]
    assert [e.data for e in reversed_] == [
        {
            "order_id": order_id,
            "refund_id": request.data["refund_id"],
            "attempt_id": str(attempt.id),
            "payment_intent_id": paid.id,
            "provider_refund_id": accepted.id,
            "amount": 6000,
            "currency": "EUR",
            "reason": "expired_or_canceled_card",
        }
    ]
    assert (REGISTRY.get_sample_value("handshake_payment_refund_reversals_total") or 0.0) == reversals_before + 1

    # the same failure told again, by other event types: handled, nothing more
    for again in ("refund.updated", "charge.refund.updated"):
        assert await service.deliver(PROVIDER_EVENTS, refund_event(again, failed, order_id)) == "applied"
    assert [e.type for e in await service.emitted(order_id)].count("payment.refund_reversed") == 1

    # the 6000 no longer counts against the capture: the order's new refund of it is made at the provider
    retry = events.refund(order_id, 6000)
    assert await service.deliver(ORDER_EVENTS, retry) == "applied"
    states = {str(r.id): r.state for r in await service.refunds(order_id)}
    assert states == {request.data["refund_id"]: "reversed", retry.data["refund_id"]: "succeeded"}
    assert sorted(r.metadata.to_dict()["refund_id"] for r in await browser.refunds_of(paid.id)) == sorted(
        [request.data["refund_id"], retry.data["refund_id"]]
    )


async def test_a_failure_of_a_refund_never_counted_changes_nothing(service, browser, checkout) -> None:
    order_id, _, paid = await checkout.paid(service, 4000)
    made = await refund_at_dashboard(browser, (await charge_of(browser, paid.id))["id"], 1000)
    # (Stripe names the intent on every Refund; the emulator only on those created for an intent)
    failed = {**made.to_dict(for_json=True), "status": "failed", "failure_reason": "unknown", "payment_intent": paid.id}
    assert await service.deliver(PROVIDER_EVENTS, refund_event("refund.failed", failed, order_id)) == "applied"
    assert await service.refunds(order_id) == []
    assert "payment.refund_reversed" not in [e.type for e in await service.emitted(order_id)]
