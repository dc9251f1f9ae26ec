"""The customer paid and closed the tab, and the webhook never came: one reconciliation run finds the
payment at the provider and the saga completes. On a system of its own with no webhook registered."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from handshake_devstack.storefront import Storefront
from tests.conftest import system_of_its_own


@pytest.fixture(scope="module")
def deaf(stack) -> Iterator[Storefront]:
    with system_of_its_own(
        stack,
        "deaf",
        register_webhook=False,
        extra_env={
            "payment": {
                "HANDSHAKE_RECONCILIATION_INTERVAL_SECONDS": "0",
                "HANDSHAKE_RECONCILIATION_PENDING_AFTER_SECONDS": "0",
            },
            "webhook-ingest": {"HANDSHAKE_GAP_SCAN_INTERVAL_SECONDS": "0"},
        },
    ) as shop:
        yield shop


def test_one_reconciliation_run_completes_an_order_whose_webhook_never_came(deaf):
    before = deaf.levels("HS-MUG")
    placed = deaf.checkout([{"sku": "HS-MUG", "quantity": 1}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    session = deaf.payment_session(order_id, token)
    deaf.pay(session["payment_intent_id"])
    time.sleep(2.0)  # the emulator would have sent its webhook by now: nobody is listening
    assert deaf.order(order_id, token)["state"] == "payment_pending"

    r = deaf.http.post(
        deaf.system.url("payment") + "/v1/admin/reconciliation-runs",
        json={"reason": "customer says they paid"},
        headers=deaf.admin(),
    )
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["repaired"] >= 1

    order = deaf.wait_for_state(order_id, token, {"fulfillment_pending"}, timeout=30)
    assert [s["to"] for s in order["timeline"]] == ["draft", "payment_pending", "paid", "fulfillment_pending"]
    assert deaf.levels("HS-MUG") == (before[0] - 1, 0, before[2] + 1)
    assert [pi.status for pi in deaf.intents_for(order_id)] == ["succeeded"]
    # a second run finds nothing left to repair
    again = deaf.http.post(
        deaf.system.url("payment") + "/v1/admin/reconciliation-runs", json={"reason": "again"}, headers=deaf.admin()
    ).json()
    assert again["repaired"] == 0
