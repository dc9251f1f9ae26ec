"""Staff reconcile one order now, from its page: that order's attempts are checked with the provider (the Stripe
emulator) whatever their age, the run is recorded for the order, and a repeated request runs nothing again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from handshake_devstack.tokens import issue_token
from handshake_payment.app import create_app
from handshake_payment.db import reconciliation_runs
from handshake_payment.domain.attempts import AttemptState as A

CARD_OK = "4242424242424242"


def staff(settings: Any, sub: str, *roles: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {issue_token(settings, sub, list(roles))}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


async def runs_of(service: Any, order_id: str) -> int:
    async with service.db.engine.connect() as conn:
        query = select(func.count()).where(reconciliation_runs.c.order_id == uuid.UUID(order_id))
        return int((await conn.execute(query)).scalar_one())


@pytest.fixture
async def patient(settings) -> AsyncIterator[httpx.AsyncClient]:
    """The service (on the same database) as deployed: a run over everything looks only at attempts waiting
    longer than an hour here, so what a run repairs in these tests it repairs because staff asked about the
    order. Its reconciler is `patient.reconciler`."""
    app = create_app(settings.model_copy(update={"reconciliation_pending_after_seconds": 3600}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payment") as http:
        http.reconciler = app.state.reconciler
        yield http
    await app.state.runtime.db.dispose()
    await app.state.gateway.aclose()


def url(order_id: str) -> str:
    return f"/v1/admin/orders/{order_id}/reconciliation"


async def test_reconciling_one_order_applies_its_fresh_payment_and_leaves_other_orders_alone(
    service, patient, checkout, browser
) -> None:
    asked, other = str(uuid.uuid4()), str(uuid.uuid4())
    for order_id in (asked, other):
        attempt = await checkout.attempt(service, order_id, 2500)
        await browser.pay(attempt.provider_intent_id, CARD_OK)  # paid; the webhook never came
    # a scheduled run leaves both alone: they have not waited long enough
    assert (await patient.reconciler.run_once(trigger="scheduled"))["checked"] == 0

    r = await patient.post(
        url(asked),
        json={"reason": "customer says they paid"},
        headers=staff(service.settings, "agent-7", "support", key="form-1"),
    )

    assert r.status_code == 201, r.text
    run = r.json()
    assert (run["trigger"], run["order_id"], run["requested_by"], run["note"]) == (
        "manual-order",
        asked,
        "agent-7",
        "customer says they paid",
    )
    assert (run["checked"], run["repaired"], run["flagged"], run["errors"]) == (1, 1, 0, 0)
    assert run["finished_at"] is not None
    assert (await service.attempts(asked))[0].state == A.SUCCEEDED
    assert [e.type for e in await service.emitted(asked)][-1] == "payment.succeeded"
    assert (await service.attempts(other))[0].state == A.REQUIRES_PAYMENT


async def test_reconciling_one_order_twice_with_the_same_key_records_one_run(
    service, patient, checkout, browser
) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 900)
    await browser.pay(attempt.provider_intent_id, CARD_OK)
    finance = staff(service.settings, "agent-3", "finance", key="form-42")

    first = await patient.post(url(order_id), json={"reason": "stuck order"}, headers=finance)
    again = await patient.post(url(order_id), json={"reason": "stuck order"}, headers=finance)

    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await runs_of(service, order_id) == 1
    # the same key for another request is a client bug, not a second run
    other = await patient.post(url(order_id), json={"reason": "something else"}, headers=finance)
    assert other.status_code == 422 and other.json()["type"].endswith("/idempotency-key-reused")
    # a new form (a new key) is a new request
    fresh = await patient.post(
        url(order_id),
        json={"reason": "stuck order"},
        headers=staff(service.settings, "agent-3", "finance", key="form-43"),
    )
    assert fresh.status_code == 201 and fresh.json()["run_id"] != first.json()["run_id"]
    assert await runs_of(service, order_id) == 2


async def test_a_double_click_runs_one_reconciliation(service, patient, checkout, browser) -> None:
    order_id = str(uuid.uuid4())
    attempt = await checkout.attempt(service, order_id, 900)
    await browser.pay(attempt.provider_intent_id, CARD_OK)
    headers = staff(service.settings, "agent-3", "admin", key="form-7")

    answers = await asyncio.gather(
        *(patient.post(url(order_id), json={"reason": "double click"}, headers=headers) for _ in range(2))
    )

    assert sorted(a.status_code for a in answers) in ([201, 201], [201, 409])
    assert await runs_of(service, order_id) == 1
    assert [e.type for e in await service.emitted(order_id)].count("payment.succeeded") == 1


async def test_runs_that_touched_an_order_are_listed_for_it(service, http, checkout, browser) -> None:
    repaired, asked, untouched = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    attempt = await checkout.attempt(service, repaired, 700)
    await browser.pay(attempt.provider_intent_id, CARD_OK)
    scheduled = await service.app.state.reconciler.run_once(trigger="scheduled")  # repairs `repaired`
    await checkout.attempt(service, asked, 800)
    await checkout.attempt(service, untouched, 800)
    support = staff(service.settings, "agent-7", "support")
    manual = (
        await http.post(url(asked), json={"reason": "looking"}, headers={**support, "Idempotency-Key": "k1"})
    ).json()
    # a later run over everything that finds nothing to repair did not touch any of them
    await service.app.state.reconciler.run_once(trigger="scheduled")

    def listed(order_id: str) -> Any:
        return http.get("/v1/admin/reconciliation-runs", params={"order_id": order_id}, headers=support)

    assert [r["run_id"] for r in (await listed(repaired)).json()["runs"]] == [scheduled["run_id"]]
    [run] = (await listed(asked)).json()["runs"]
    assert (run["run_id"], run["note"], run["trigger"]) == (manual["run_id"], "looking", "manual-order")
    assert (await listed(untouched)).json()["runs"] == []
    # every run, unfiltered, stays for finance and admin
    assert (await http.get("/v1/admin/reconciliation-runs", headers=support)).status_code == 403


async def test_order_reconciliation_is_for_staff_and_refuses_what_it_cannot_keep(service, http) -> None:
    order_id = str(uuid.uuid4())
    body = {"reason": "stuck order"}
    support = staff(service.settings, "agent-7", "support")

    def problem(r: httpx.Response, status: int) -> None:
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"

    problem(await http.post(url(order_id), json=body, headers={"Idempotency-Key": "k"}), 401)
    # a customer is refused before the body is looked at
    problem(await http.post(url(order_id), json={"x": 1}, headers=staff(service.settings, "c-1", key="k")), 403)
    problem(await http.post(url(order_id), json=body, headers=support), 400)
    problem(await http.post(url(order_id), json=body, headers={**support, "Idempotency-Key": "k" * 256}), 400)
    for bad in ({}, {"reason": "x"}, {"reason": "a\x00b"}, {"reason": "y" * 501}, {"reason": "ok!", "more": 1}):
        problem(await http.post(url(order_id), json=bad, headers={**support, "Idempotency-Key": "k"}), 422)
    problem(await http.post(url("not-an-order"), json=body, headers={**support, "Idempotency-Key": "k"}), 404)
    problem(await http.get("/v1/admin/reconciliation-runs", params={"order_id": "x\x01"}, headers=support), 422)
    problem(
        await http.get(
            "/v1/admin/reconciliation-runs", params={"limit": 501}, headers=staff(service.settings, "a", "admin")
        ),
        422,
    )
    assert await runs_of(service, order_id) == 0
