"""Authorize, commit stock, then capture (payment setting capture_method=manual), on a system of its
own. The emulator never announces an authorization, so the test delivers Stripe's
payment_intent.amount_capturable_updated itself, signed with the endpoint secret."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from handshake_devstack.storefront import Storefront
from handshake_devstack.system import wait_for
from tests.conftest import system_of_its_own
from tests.stripe_signing import signed_delivery


@pytest.fixture(scope="module")
def manual(stack) -> Iterator[Storefront]:
    with system_of_its_own(stack, "manual", extra_env={"payment": {"HANDSHAKE_CAPTURE_METHOD": "manual"}}) as shop:
        yield shop


def authorize(shop: Storefront, payment_intent_id: str) -> None:
    pi = shop.stripe.v1.payment_intents.retrieve(payment_intent_id)
    assert pi.status == "requires_capture"
    r = signed_delivery(
        shop.system.webhook_url,
        shop.system.stack.stripe.webhook_secret,
        "payment_intent.amount_capturable_updated",
        pi.to_dict(),
    )
    assert r.status_code == 200, r.text


def test_authorized_payment_is_captured_only_after_the_stock_is_committed(manual):
    before = manual.levels("HS-TEE")
    placed = manual.checkout([{"sku": "HS-TEE", "quantity": 2}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    session = manual.payment_session(order_id, token)
    manual.pay(session["payment_intent_id"])
    authorize(manual, session["payment_intent_id"])

    order = manual.wait_for_state(order_id, token, {"fulfillment_pending"}, timeout=60)
    assert [s["to"] for s in order["timeline"]] == [
        "draft",
        "payment_pending",
        "payment_authorized",
        "paid",
        "fulfillment_pending",
    ]
    pi = manual.stripe.v1.payment_intents.retrieve(session["payment_intent_id"])
    assert pi.status == "succeeded" and pi.amount == order["total"]
    assert manual.levels("HS-TEE") == (before[0] - 2, 0, before[2] + 2)


def test_a_failed_capture_cancels_the_order_and_puts_the_stock_back(manual):
    system = manual.system
    before = manual.levels("HS-MUG")
    placed = manual.checkout([{"sku": "HS-MUG", "quantity": 1}])
    order_id, token = placed["order_id"], placed["lookup_token"]
    session = manual.payment_session(order_id, token)
    manual.pay(session["payment_intent_id"])
    system.stop_service("inventory")  # hold the saga between authorization and capture
    try:
        authorize(manual, session["payment_intent_id"])
        manual.wait_for_state(order_id, token, {"payment_authorized"}, timeout=30)
        # the authorization lapses at the provider before we capture
        manual.stripe.v1.payment_intents.cancel(session["payment_intent_id"])
    finally:
        system.start_service("inventory")

    order = manual.wait_for_state(order_id, token, {"cancelled"}, timeout=60)
    assert [s["to"] for s in order["timeline"]] == [
        "draft",
        "payment_pending",
        "payment_authorized",
        "capture_failed",
        "cancelled",
    ]
    wait_for(lambda: manual.levels("HS-MUG") == before, 30)
    assert manual.stripe.v1.payment_intents.retrieve(session["payment_intent_id"]).status == "canceled"
