"""Reconciliation against the Stripe emulator: what the provider holds wins, announced through the same
path as a webhook, exactly once. No provider event is delivered in these tests unless said so."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY
from sqlalchemy import select, text

from handshake_devstack.testing.fixtures import isolated_kafka_settings, serve_in_process
from handshake_devstack.tokens import issue_token
from handshake_payment.app import create_app
from handshake_payment.db import attempt_transitions, reconciliation_runs
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.reconciliation.reconciler import Reconciler
from handshake_shared.envelope import CloudEvent, parse_event
from handshake_shared.events import PAYMENT_EVENTS, PROVIDER_EVENTS
from handshake_shared.events.order import OrderRefundRequested
from handshake_shared.loops import LoopState

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000341"


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def transitions(service, attempt_id) -> list[tuple[str, str, str | None]]:
    async with service.db.engine.connect() as conn:
        rows = await conn.execute(
            select(attempt_transitions.c.to_state, attempt_transitions.c.reason, attempt_transitions.c.event_id)
            .where(attempt_transitions.c.attempt_id == attempt_id)
            .order_by(attempt_transitions.c.id)
        )
        return [tuple(r) for r in rows]


async def test_a_browser_paid_but_the_webhook_never_came_reconciliation_pays_once(
    service, browser, events, checkout
) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 4200)
    # the customer confirmed, then closed the tab; Stripe's webhook never reached us
    paid = await browser.pay(attempt.provider_intent_id, CARD_OK)
    assert paid.status == "succeeded"
    assert (await service.attempts(order_id))[0].state == A.REQUIRES_PAYMENT
    repairs_before = metric("handshake_reconciliation_repairs_total", {"kind": "payment_succeeded"})
    repaired_runs_before = metric("handshake_reconciliation_runs_total", {"outcome": "repaired"})

    run = await service.app.state.reconciler.run_once(trigger="manual")

    [row] = await service.attempts(order_id)
    assert (row.state, row.amount_captured, row.provider_intent_id) == (A.SUCCEEDED, 4200, paid.id)
    emitted = await service.emitted(order_id)
    assert [e.type for e in emitted] == ["payment.intent_created", "payment.succeeded"]
    assert emitted[1].data == {
        "order_id": order_id,
        "attempt_id": str(attempt.id),
        "payment_intent_id": paid.id,
        "amount": 4200,
        "currency": "EUR",
    }
    assert emitted[1].causationid == run["run_id"]
    to_state, reason, event_id = (await transitions(service, attempt.id))[-1]
    assert to_state == A.SUCCEEDED and reason.startswith("reconciliation") and event_id == run["run_id"]
    assert (run["trigger"], run["checked"], run["repaired"], run["flagged"], run["errors"]) == ("manual", 1, 1, 0, 0)
    assert run["finished_at"] is not None
    assert run["detail"]["repairs"] == [
        {
            "attempt_id": str(attempt.id),
            "order_id": order_id,
            "payment_intent_id": paid.id,
            "from": "requires_payment",
            "to": "succeeded",
            "provider_status": "succeeded",
            "outcome": "applied",
        }
    ]
    assert metric("handshake_reconciliation_repairs_total", {"kind": "payment_succeeded"}) == repairs_before + 1
    assert metric("handshake_reconciliation_runs_total", {"outcome": "repaired"}) == repaired_runs_before + 1

    # a second run, and the late webhook after all: nothing new
    again = await service.app.state.reconciler.run_once(trigger="scheduled")
    assert (again["checked"], again["repaired"], again["flagged"], again["errors"]) == (0, 0, 0, 0)
    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"
    assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created", "payment.succeeded"]
    assert [r.amount for r in await browser.refunds_of(paid.id)] == []
    async with service.db.engine.connect() as conn:
        runs = (
            await conn.execute(select(reconciliation_runs.c.trigger).order_by(reconciliation_runs.c.started_at))
        ).all()
    assert [r.trigger for r in runs] == ["manual", "scheduled"]


async def test_declines_cancels_and_unpaid_intents_are_reconciled_as_the_provider_says(
    service, browser, checkout
) -> None:
    unpaid_order, declined_order, cancelled_order = (str(uuid.uuid4()) for _ in range(3))
    unpaid = await checkout.attempt(service, unpaid_order, 1000)
    declined = await checkout.attempt(service, declined_order, 2000)
    cancelled = await checkout.attempt(service, cancelled_order, 3000)
    assert (await browser.pay(declined.provider_intent_id, CARD_DECLINED)).status == "requires_payment_method"
    # cancelled in the dashboard
    await browser.client.v1.payment_intents.cancel_async(cancelled.provider_intent_id)

    run = await service.app.state.reconciler.run_once()

    assert (run["checked"], run["repaired"], run["flagged"], run["errors"]) == (3, 2, 0, 0)
    assert (await service.attempts(unpaid_order))[0].state == A.REQUIRES_PAYMENT
    assert (await service.attempts(declined_order))[0].state == A.FAILED
    assert (await service.attempts(cancelled_order))[0].state == A.CANCELED
    assert [e.type for e in await service.emitted(unpaid_order)] == ["payment.intent_created"]
    assert [e.type for e in await service.emitted(declined_order)] == ["payment.intent_created", "payment.failed"]
    assert [e.type for e in await service.emitted(cancelled_order)] == ["payment.intent_created", "payment.canceled"]
    for attempt in (declined, cancelled):
        assert (await transitions(service, attempt.id))[-1][1].startswith("reconciliation")

    again = await service.app.state.reconciler.run_once()
    # the unpaid and the declined one are looked at again (either may still be paid), nothing is repaired
    assert (again["checked"], again["repaired"]) == (2, 0)
    assert [e.type for e in await service.emitted(declined_order)] == ["payment.intent_created", "payment.failed"]
    assert (await browser.retrieve(unpaid.provider_intent_id)).status == "requires_payment_method"


async def test_an_amount_the_provider_holds_that_differs_is_flagged_never_paid(
    service, browser, events, checkout
) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 5000)
    # someone changed the amount at the provider before the customer paid
    await browser.client.v1.payment_intents.update_async(attempt.provider_intent_id, params={"amount": 4500})
    paid = await browser.pay(attempt.provider_intent_id, CARD_OK)
    assert (paid.status, int(paid.amount)) == ("succeeded", 4500)  # localstripe keeps an updated amount as text
    mismatches_before = metric("handshake_reconciliation_mismatches_total")

    run = await service.app.state.reconciler.run_once()

    assert (run["checked"], run["repaired"], run["flagged"]) == (1, 0, 1)
    assert run["detail"]["flagged"][0]["amount"] == 4500
    [row] = await service.attempts(order_id)
    assert (row.state, row.amount_captured) == (A.SUCCEEDED, 4500)
    assert row.provider_mismatch == {
        "amount": 4500,
        "currency": "EUR",
        "state": "succeeded",
        "detected_by": "reconciliation",
    }
    emitted = await service.emitted(order_id)
    assert [e.type for e in emitted] == ["payment.intent_created", "payment.mismatch"]
    assert emitted[1].data == {
        "order_id": order_id,
        "attempt_id": str(attempt.id),
        "payment_intent_id": paid.id,
        "expected_amount": 5000,
        "expected_currency": "EUR",
        "provider_amount": 4500,
        "provider_currency": "EUR",
        "detected_by": "reconciliation",
        "captured": True,  # the provider took it: the order holds it for review and refunds
    }
    assert "amount mismatch" in (await transitions(service, attempt.id))[-1][1]
    assert metric("handshake_reconciliation_mismatches_total") == mismatches_before + 1

    # neither a second run nor the webhook arriving now announces it as paid
    assert (await service.app.state.reconciler.run_once())["flagged"] == 0
    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"
    assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created", "payment.mismatch"]


async def test_a_webhook_revealing_another_currency_is_a_mismatch_not_a_payment(
    service, browser, events, checkout
) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 2500)
    await browser.client.v1.payment_intents.update_async(attempt.provider_intent_id, params={"currency": "usd"})
    paid = await browser.pay(attempt.provider_intent_id, CARD_OK)
    assert (paid.status, paid.amount, paid.currency) == ("succeeded", 2500, "usd")

    assert await service.deliver(PROVIDER_EVENTS, events.stripe("payment_intent.succeeded", paid)) == "applied"

    [row] = await service.attempts(order_id)
    assert row.state == A.SUCCEEDED and row.provider_mismatch["detected_by"] == "webhook"
    emitted = await service.emitted(order_id)
    assert [e.type for e in emitted] == ["payment.intent_created", "payment.mismatch"]
    assert (
        emitted[1].data["provider_currency"],
        emitted[1].data["expected_currency"],
        emitted[1].data["detected_by"],
    ) == (
        "USD",
        "EUR",
        "webhook",
    )


async def test_a_refund_left_requested_is_made_once_or_found_by_reconciliation(
    service, browser, events, checkout
) -> None:
    order_id, _attempt, paid = await checkout.paid(service, 9000)
    refunds = service.graph.refunds
    # one refund recorded, then the process died before calling the provider
    never_sent = events.refund(order_id, 4000)
    never_sent_id = await refunds.request(never_sent, OrderRefundRequested.model_validate(never_sent.data))
    # another made at the provider, but the process died before storing its id
    lost = events.refund(order_id, 3000)
    lost_id = await refunds.request(lost, OrderRefundRequested.model_validate(lost.data))
    assert await refunds.execute(lost_id) is None
    async with service.db.transaction() as conn:
        await conn.execute(
            text("UPDATE refunds SET provider_refund_id = NULL, recovery_point = 'recorded' WHERE id = :id"),
            {"id": lost_id},
        )
    assert sorted(r.amount for r in await browser.refunds_of(paid.id)) == [3000]

    run = await service.app.state.reconciler.run_once()

    assert (run["checked"], run["repaired"], run["errors"]) == (2, 2, 0)
    made = {r.metadata["refund_id"]: r for r in await browser.refunds_of(paid.id)}
    assert {k: r.amount for k, r in made.items()} == {str(never_sent_id): 4000, str(lost_id): 3000}
    rows = {r.id: r for r in await service.refunds(order_id)}
    for refund_id in (never_sent_id, lost_id):
        assert (rows[refund_id].state, rows[refund_id].provider_refund_id) == ("succeeded", made[str(refund_id)].id)
    refunded = [e for e in await service.emitted(order_id) if e.type == "payment.refunded"]
    assert sorted((e.data["refund_id"], e.data["amount"]) for e in refunded) == sorted(
        [(str(never_sent_id), 4000), (str(lost_id), 3000)]
    )
    async with service.db.engine.connect() as conn:
        reasons = (
            (await conn.execute(text("SELECT reason FROM refund_transitions WHERE to_state = 'succeeded' ORDER BY id")))
            .scalars()
            .all()
        )
    assert all(r.startswith("reconciliation: provider refund") for r in reasons) and len(reasons) == 2

    again = await service.app.state.reconciler.run_once()
    assert (again["checked"], again["repaired"]) == (0, 0)
    assert len(await browser.refunds_of(paid.id)) == 2
    assert len([e for e in await service.emitted(order_id) if e.type == "payment.refunded"]) == 2


async def test_finance_runs_reconciliation_over_the_admin_api(service, http, browser, checkout) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 1500)
    await browser.pay(attempt.provider_intent_id, CARD_OK)
    finance = {"Authorization": f"Bearer {issue_token(service.settings, 'agent-3', ['finance'])}"}
    support = {"Authorization": f"Bearer {issue_token(service.settings, 'agent-4', ['support'])}"}

    assert (await http.post("/v1/admin/reconciliation-runs")).status_code == 401
    assert (await http.post("/v1/admin/reconciliation-runs", headers=support)).status_code == 403
    assert (await service.attempts(order_id))[0].state == A.REQUIRES_PAYMENT
    answer = await http.post("/v1/admin/reconciliation-runs", headers=finance, json={"reason": "webhook outage"})

    assert answer.status_code == 201
    run = answer.json()
    assert (run["trigger"], run["requested_by"], run["checked"], run["repaired"]) == ("manual", "agent-3", 1, 1)
    assert run["detail"]["note"] == "webhook outage"
    assert (await service.attempts(order_id))[0].state == A.SUCCEEDED
    assert [e.type for e in await service.emitted(order_id)][-1] == "payment.succeeded"
    listed = await http.get("/v1/admin/reconciliation-runs", headers=finance)
    assert listed.status_code == 200 and [r["run_id"] for r in listed.json()["runs"]] == [run["run_id"]]
    assert (await http.get("/v1/admin/reconciliation-runs", headers=support)).status_code == 403


async def test_the_running_service_reconciles_on_its_schedule_and_publishes_the_repair(
    service, browser, checkout, stack
) -> None:
    """The app's background task: no one asks, the interval elapses, the abandoned payment is applied and
    payment.succeeded reaches the broker through the outbox."""
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 3300)
    paid = await browser.pay(attempt.provider_intent_id, CARD_OK)
    scheduled = service.settings.model_copy(
        update={**isolated_kafka_settings(stack), "reconciliation_interval_seconds": 0.3}
    )
    app = create_app(scheduled)
    async with serve_in_process(app):
        deadline = asyncio.get_running_loop().time() + 15
        while (await service.attempts(order_id))[0].state != A.SUCCEEDED:
            assert asyncio.get_running_loop().time() < deadline, "no scheduled run repaired the payment"
            await asyncio.sleep(0.1)
        consumer = AIOKafkaConsumer(
            PAYMENT_EVENTS,
            bootstrap_servers=stack.broker.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        found: list[CloudEvent] = []
        try:
            while "payment.succeeded" not in [e.type for e in found] and asyncio.get_running_loop().time() < deadline:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    found += [parse_event(r.value) for r in records if r.key == order_id.encode()]
        finally:
            await consumer.stop()
    [succeeded] = [e for e in found if e.type == "payment.succeeded"]
    assert (succeeded.data["payment_intent_id"], succeeded.data["amount"]) == (paid.id, 3300)
    async with service.db.engine.connect() as conn:
        runs = (await conn.execute(select(reconciliation_runs))).all()
    assert {r.trigger for r in runs} == {"scheduled"}
    # the service stopped as soon as the event was seen, maybe mid-run: every run still says what it repaired
    assert all(r.finished_at is not None and r.repaired == len(r.detail["repairs"]) for r in runs)
    # the running service consumes whatever the shared broker holds: count this payment's repair, not others'
    [(run_id, repair)] = [(r.id, x) for r in runs for x in r.detail["repairs"] if x["attempt_id"] == str(attempt.id)]
    assert (repair["from"], repair["to"], repair["outcome"]) == ("requires_payment", "succeeded", "applied")
    assert succeeded.causationid == str(run_id) and (await transitions(service, attempt.id))[-1][2] == str(run_id)


class HeldAtProvider:
    """The service's Stripe gateway, except that the second intent a run retrieves waits at the provider
    until the test lets it go."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway
        self.retrieved = 0
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str):
        return getattr(self.gateway, name)

    async def retrieve_intent(self, intent_id: str):
        self.retrieved += 1
        if self.retrieved == 2:
            self.holding.set()
            await self.release.wait()
        return await self.gateway.retrieve_intent(intent_id)


async def test_a_service_stopping_mid_run_leaves_every_repair_the_run_made_on_its_record(
    service, browser, checkout
) -> None:
    """Stopping the service stops the scheduled loop while a run may have committed a repair and not yet
    its own record: cancelled there, the payment was repaired by a run whose row says it repaired nothing.
    The run finishes the item at hand, records what it did, and leaves the rest to the next run."""
    orders = [str(uuid.uuid4()) for _ in range(3)]
    attempts = {o: await checkout.attempt(service, o, 1000 + i) for i, o in enumerate(orders)}
    for attempt in attempts.values():
        assert (await browser.pay(attempt.provider_intent_id, CARD_OK)).status == "succeeded"
    held = HeldAtProvider(service.app.state.gateway)
    scheduled = service.settings.model_copy(update={"reconciliation_interval_seconds": 0.05})
    reconciler = Reconciler(
        service.db,
        intents=service.graph.intents,
        capture=service.graph.capture,
        cancel=service.graph.cancel,
        holding=service.graph.holding,
        intake=service.graph.intake,
        refunds=service.graph.refunds,
        gateway=held,
        settings=scheduled,
    )

    reconciler.loop.start()
    await asyncio.wait_for(held.holding.wait(), 30)
    states = {o: (await service.attempts(o))[0].state for o in orders}
    # the first repair is committed, the run's row not yet written: the service is told to stop now
    assert sorted(states.values()) == [A.REQUIRES_PAYMENT, A.REQUIRES_PAYMENT, A.SUCCEEDED]
    reconciler.loop.stop()
    held.release.set()
    await reconciler.loop.stopped()
    assert reconciler.loop.state == LoopState.STOPPED and reconciler.loop.failures == 0

    async with service.db.engine.connect() as conn:
        [run] = (await conn.execute(select(reconciliation_runs))).all()
    assert (run.trigger, run.checked, run.repaired, run.errors) == ("scheduled", 2, 2, 0)
    assert run.finished_at is not None and run.detail["stopped"].startswith("asked to stop")
    repaired = {x["order_id"] for x in run.detail["repairs"]}
    left = [o for o in orders if o not in repaired]
    assert len(repaired) == 2 and [(await service.attempts(o))[0].state for o in left] == [A.REQUIRES_PAYMENT]
    for order_id in repaired:
        assert (await service.attempts(order_id))[0].state == A.SUCCEEDED
        assert (await transitions(service, attempts[order_id].id))[-1][2] == str(run.id)

    # what the stop left is the next run's, and no payment is announced twice
    nxt = await service.app.state.reconciler.run_once(trigger="scheduled")
    assert (nxt["checked"], nxt["repaired"]) == (1, 1) and nxt["detail"]["repairs"][0]["order_id"] == left[0]
    for order_id in orders:
        assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created", "payment.succeeded"]


async def test_attempts_whose_payment_request_stopped_half_way_are_finished_with_one_intent_each(
    service, browser
) -> None:
    """Both payment requests were dead-lettered after the attempt row was written: one before the provider
    was called, one after the provider made the intent but before its id was stored. The orders would wait
    for a payment session forever; a run finishes both, and never makes a second intent."""
    from handshake_payment.db import payment_attempts
    from handshake_payment.store import attempts as repo

    never_called, called = str(uuid.uuid4()), str(uuid.uuid4())
    async with service.db.transaction() as tx:
        for order_id in (never_called, called):
            await repo.insert_attempt(
                tx,
                order_id=uuid.UUID(order_id),
                request_id=f"req-{order_id}",
                amount=2500,
                currency="EUR",
                event_id=str(uuid.uuid4()),
            )
    async with service.db.engine.connect() as conn:
        first = (
            await conn.execute(select(payment_attempts).where(payment_attempts.c.order_id == uuid.UUID(never_called)))
        ).one()
        second = (
            await conn.execute(select(payment_attempts).where(payment_attempts.c.order_id == uuid.UUID(called)))
        ).one()
    made = await service.app.state.gateway.create_intent(
        attempt_id=str(second.id), order_id=called, amount=2500, currency="EUR", idempotency_key=f"lost-{second.id}"
    )
    async with service.db.transaction() as tx:  # the handler that made it held the lease, then died
        await tx.execute(
            text(
                "UPDATE payment_attempts SET locked_at = now() - interval '1 hour', "
                "intent_create_calls = 1 WHERE id = :id"
            ),
            {"id": second.id},
        )
    repairs_before = metric("handshake_reconciliation_repairs_total", {"kind": "payment_requires_payment"})

    run = await service.app.state.reconciler.run_once()

    assert run["errors"] == 0 and run["repaired"] == 2
    assert {r["order_id"]: r["outcome"] for r in run["detail"]["repairs"]} == {
        never_called: "finished",
        called: "finished",
    }
    assert metric("handshake_reconciliation_repairs_total", {"kind": "payment_requires_payment"}) == repairs_before + 2
    [created] = await browser.intents_for(never_called)
    assert (created.amount, created.currency, created.metadata["attempt_id"]) == (2500, "eur", str(first.id))
    assert [pi.id for pi in await browser.intents_for(called)] == [made.id]  # adopted, not made again
    for order_id, attempt, intent_id in ((never_called, first, created.id), (called, second, made.id)):
        [row] = await service.attempts(order_id)
        assert (row.state, row.provider_intent_id) == (A.REQUIRES_PAYMENT, intent_id)
        [announced] = await service.emitted(order_id)
        assert announced.type == "payment.intent_created" and announced.causationid == run["run_id"]
        assert announced.data == {
            "order_id": order_id,
            "attempt_id": str(attempt.id),
            "payment_intent_id": intent_id,
            "amount": 2500,
            "currency": "EUR",
        }

    again = await service.app.state.reconciler.run_once()
    assert again["repaired"] == 0
    for order_id in (never_called, called):
        assert len(await browser.intents_for(order_id)) == 1
        assert [e.type for e in await service.emitted(order_id)] == ["payment.intent_created"]
