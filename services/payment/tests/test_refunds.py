"""order.refund_requested against real PostgreSQL and the Stripe emulator. The emulator ignores idempotency
keys and never refuses a refund above the charge, so every "at most" here is our own doing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import text

from handshake_devstack.tokens import issue_token
from handshake_payment.domain.attempts import AttemptState as A
from handshake_shared.events import ORDER_EVENTS, PROVIDER_EVENTS
from handshake_shared.events.order import OrderRefundRequested

CARD_DECLINED = "4000000000000341"


def refunds_counted(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("handshake_payment_refunds_total", {"outcome": outcome, "kind": "requested"}) or 0.0
    )


async def test_a_full_refund_is_made_once_at_the_provider_and_announced(
    service, http, browser, events, checkout
) -> None:
    order_id, attempt, paid = await checkout.paid(service, 7000)
    request = events.refund(order_id, 7000)
    refund_id = request.data["refund_id"]
    succeeded_before = refunds_counted("succeeded")

    assert await service.deliver(ORDER_EVENTS, request) == "applied"

    [made] = await browser.refunds_of(paid.id)
    assert made.amount == 7000
    assert made.metadata.to_dict() == {"order_id": order_id, "refund_id": refund_id}
    [row] = await service.refunds(order_id)
    assert (str(row.id), row.attempt_id, row.state, row.provider_refund_id, row.automatic, row.requested_by) == (
        refund_id,
        attempt.id,
        "succeeded",
        made.id,
        False,
        "agent-7",
    )
    refunded = (await service.emitted(order_id))[-1]
    assert refunded.type == "payment.refunded"
    assert refunded.data == {
        "order_id": order_id,
        "refund_id": refund_id,
        "attempt_id": str(attempt.id),
        "payment_intent_id": paid.id,
        "provider_refund_id": made.id,
        "amount": 7000,
        "currency": "EUR",
        "reason": "customer_request",
        "automatic": False,
    }
    assert refunds_counted("succeeded") == succeeded_before + 1

    # redelivered after a lost inbox row, and re-emitted by the order in a new envelope: still one refund
    await service.forget(request)
    assert await service.deliver(ORDER_EVENTS, request) == "applied"
    assert await service.deliver(ORDER_EVENTS, events.refund(order_id, 7000, refund_id=refund_id)) == "applied"
    assert [r.id for r in await browser.refunds_of(paid.id)] == [made.id]
    assert [e.type for e in await service.emitted(order_id)].count("payment.refunded") == 1
    # staff see it with the provider's id
    finance = issue_token(service.settings, "agent-9", ["finance"])
    view = (
        await http.get(f"/v1/admin/orders/{order_id}/payments", headers={"Authorization": f"Bearer {finance}"})
    ).json()
    assert [(r["refund_id"], r["amount"], r["state"], r["provider_refund_id"]) for r in view["refunds"]] == [
        (refund_id, 7000, "succeeded", made.id),
    ]
    assert view["attempts"][0]["amount_captured"] == 7000


async def test_partial_refunds_stop_at_what_was_captured(service, browser, events, checkout) -> None:
    order_id, _, paid = await checkout.paid(service, 10000)

    for amount in (3000, 5000, 2500, 2000):
        assert await service.deliver(ORDER_EVENTS, events.refund(order_id, amount)) == "applied"

    assert sorted(r.amount for r in await browser.refunds_of(paid.id)) == [2000, 3000, 5000]
    assert [(r.amount, r.state, r.failure_code) for r in await service.refunds(order_id)] == [
        (3000, "succeeded", None),
        (5000, "succeeded", None),
        (2500, "failed", "exceeds_captured"),
        (2000, "succeeded", None),
    ]
    answers = [
        (e.type, e.data["amount"]) for e in await service.emitted(order_id) if e.type.startswith("payment.refund")
    ]
    assert answers == [
        ("payment.refunded", 3000),
        ("payment.refunded", 5000),
        ("payment.refund_failed", 2500),
        ("payment.refunded", 2000),
    ]
    failed = next(e for e in await service.emitted(order_id) if e.type == "payment.refund_failed")
    assert failed.data["reason"].startswith("exceeds_captured: 2500 exceeds what is left to refund (2000 of 10000")


async def test_concurrent_refund_requests_never_refund_more_than_the_capture(
    service, browser, events, checkout
) -> None:
    order_id, _, paid = await checkout.paid(service, 10000)

    outcomes = await asyncio.gather(*(service.deliver(ORDER_EVENTS, events.refund(order_id, 3000)) for _ in range(5)))

    assert outcomes == ["applied"] * 5
    at_provider = [r.amount for r in await browser.refunds_of(paid.id)]
    assert at_provider == [3000, 3000, 3000]
    rows = await service.refunds(order_id)
    assert sorted(r.state for r in rows) == ["failed", "failed", "succeeded", "succeeded", "succeeded"]
    assert {r.provider_refund_id for r in rows if r.state == "succeeded"} == {
        r.id for r in await browser.refunds_of(paid.id)
    }


async def test_a_crash_after_the_provider_refunded_refunds_exactly_once(service, browser, events, checkout) -> None:
    order_id, _, paid = await checkout.paid(service, 6000)
    request = events.refund(order_id, 6000)
    refund_id = await service.graph.refunds.request(request, OrderRefundRequested.model_validate(request.data))
    assert await service.graph.refunds.execute(refund_id) is None
    [made] = await browser.refunds_of(paid.id)
    # Stripe refunded, but its answer never reached our database (the process died before the commit)
    async with service.db.transaction() as conn:
        await conn.execute(
            text("UPDATE refunds SET provider_refund_id = NULL, recovery_point = 'recorded' WHERE id = :id"),
            {"id": refund_id},
        )

    assert await service.deliver(ORDER_EVENTS, request) == "applied"

    assert [r.id for r in await browser.refunds_of(paid.id)] == [made.id]
    [row] = await service.refunds(order_id)
    assert (row.state, row.provider_refund_id) == ("succeeded", made.id)
    [refunded] = [e for e in await service.emitted(order_id) if e.type == "payment.refunded"]
    assert (refunded.data["provider_refund_id"], refunded.data["amount"]) == (made.id, 6000)


async def test_a_refund_without_a_matching_capture_is_refused_before_the_provider(
    service, browser, events, checkout
) -> None:
    unpaid_order = str(uuid.uuid4())
    unpaid = await checkout.attempt(service, unpaid_order, 4000)
    paid_order, _, paid = await checkout.paid(service, 4000)

    assert await service.deliver(ORDER_EVENTS, events.refund(unpaid_order, 4000)) == "applied"
    assert await service.deliver(ORDER_EVENTS, events.refund(paid_order, 4000, currency="USD")) == "applied"

    assert (await browser.retrieve(unpaid.provider_intent_id)).status == "requires_payment_method"
    assert await browser.refunds_of(paid.id) == []
    for order_id, code in ((unpaid_order, "no_captured_payment"), (paid_order, "currency_mismatch")):
        [row] = await service.refunds(order_id)
        assert (row.state, row.failure_code, row.provider_refund_id) == ("failed", code, None)
        answer = (await service.emitted(order_id))[-1]
        assert answer.type == "payment.refund_failed" and answer.data["reason"].startswith(code)


async def test_a_refund_the_provider_refuses_fails_without_retrying(service, browser, events, checkout) -> None:
    """Our records say paid (a success event), the provider's charge says otherwise: Stripe answers 400,
    which no retry can fix, so the refund fails and says so instead of being retried into the dead letters."""
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 3300)
    declined = await browser.pay(attempt.provider_intent_id, CARD_DECLINED)
    forged = _Obj({**declined.to_dict(), "status": "succeeded", "last_payment_error": None})
    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", forged)) == "applied"
    assert (await service.attempts(order_id))[0].state == A.SUCCEEDED

    assert await service.deliver(ORDER_EVENTS, events.refund(order_id, 3300)) == "applied"

    assert await browser.refunds_of(declined.id) == []
    [row] = await service.refunds(order_id)
    assert (row.state, row.provider_refund_id) == ("failed", None)
    assert "Cannot refund a failed payment" in row.failure_message
    assert (await service.emitted(order_id))[-1].type == "payment.refund_failed"


class _Obj:
    """A PaymentIntent-shaped snapshot for an event the emulator cannot produce."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self, for_json: bool = False) -> dict[str, Any]:
        return dict(self.data)


async def test_each_phase_of_a_refund_leaves_its_recovery_point_on_the_row(service, browser, events, checkout) -> None:
    order_id, _, paid = await checkout.paid(service, 5200)
    request = events.refund(order_id, 5200)
    refunds = service.graph.refunds

    refund_id = await refunds.request(request, OrderRefundRequested.model_validate(request.data))
    assert [(r.state, r.recovery_point) for r in await service.refunds(order_id)] == [("requested", "recorded")]
    assert await refunds.execute(refund_id) is None
    [made] = await browser.refunds_of(paid.id)
    [row] = await service.refunds(order_id)
    assert (row.state, row.provider_refund_id, row.recovery_point) == ("requested", made.id, "provider_refunded")
    # the request delivered now finds the provider refund stored: it only records and announces it
    assert await service.deliver(ORDER_EVENTS, request) == "applied"

    assert [r.id for r in await browser.refunds_of(paid.id)] == [made.id]
    assert [(r.state, r.recovery_point) for r in await service.refunds(order_id)] == [("succeeded", "finished")]
    assert [e.type for e in await service.emitted(order_id)].count("payment.refunded") == 1
