"""charge.dispute.created: the emulator cannot open disputes, so the event carries a Dispute object shaped as
Stripe sends it, against a PaymentIntent really paid at the emulator."""

from __future__ import annotations

import uuid

from payment_test_provider_signing import forwarded  # loaded by conftest
from prometheus_client import REGISTRY

from handshake_payment.domain.attempts import AttemptState as A
from handshake_shared.events import PROVIDER_EVENTS


def dispute_event(intent_id: str, order_id: str | None, amount: int, charge: str | None = None):
    dispute = {
        "id": "dp_" + uuid.uuid4().hex[:14],
        "object": "dispute",
        "charge": charge or "ch_" + uuid.uuid4().hex[:14],
        "payment_intent": intent_id,
        "amount": amount,
        "currency": "eur",
        "reason": "fraudulent",
        "status": "needs_response",
    }
    return forwarded("charge.dispute.created", dispute, key=order_id or str(uuid.uuid4()), sequence=2), dispute


def disputes(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "handshake_payment_disputes_total", {"type": "charge.dispute.created", "outcome": outcome}
        )
        or 0.0
    )


async def test_a_dispute_of_a_paid_intent_is_announced_once(service, browser, checkout) -> None:
    order_id, attempt, paid = await checkout.paid(service, 6600)
    charge = (await browser.retrieve(paid.id)).to_dict().get("latest_charge")
    event, dispute = dispute_event(paid.id, None, 6600, charge if isinstance(charge, str) else None)

    assert await service.deliver(PROVIDER_EVENTS, event) == "applied"
    assert await service.deliver(PROVIDER_EVENTS, event) == "duplicate"

    emitted = await service.emitted(order_id)
    assert [e.type for e in emitted] == ["payment.intent_created", "payment.succeeded", "payment.disputed"]
    assert emitted[-1].data == {
        "order_id": order_id,
        "attempt_id": str(attempt.id),
        "payment_intent_id": paid.id,
        "dispute_id": dispute["id"],
        "amount": 6600,
        "currency": "EUR",
        "reason": "fraudulent",
        "status": "needs_response",
    }
    # a fact about the charge, not an attempt transition; no money moved by us
    assert (await service.attempts(order_id))[0].state == A.SUCCEEDED
    assert await browser.refunds_of(paid.id) == []


async def test_a_dispute_of_an_unknown_intent_is_kept_not_crashed_on(service, browser) -> None:
    foreign = await browser.client.v1.payment_intents.create_async(params={"amount": 1200, "currency": "eur"})
    before = disputes("unmatched")
    event, _ = dispute_event(foreign.id, None, 1200)

    assert await service.deliver(PROVIDER_EVENTS, event) == "applied"

    assert disputes("unmatched") == before + 1
    assert await service.emitted(event.subject) == []


async def test_a_dispute_replayed_past_the_inbox_is_not_announced_again(service, browser, checkout) -> None:
    """Support replays the stored event (a new inbox row): one dispute, one payment.disputed."""
    order_id, _, paid = await checkout.paid(service, 4300)
    event, _ = dispute_event(paid.id, None, 4300)
    before = disputes("duplicate")

    assert await service.deliver(PROVIDER_EVENTS, event) == "applied"
    await service.forget(event)
    assert await service.deliver(PROVIDER_EVENTS, event) == "applied"

    assert [e.type for e in await service.emitted(order_id)].count("payment.disputed") == 1
    assert disputes("duplicate") == before + 1
