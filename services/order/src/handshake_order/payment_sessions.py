"""The payment session (the client secret) of an order: held by the payment service and fetched from its
internal API on the customer's request, never stored here or sent over Kafka. Opening it lengthens a guest's
short hold on the stock to the full checkout hold."""

from __future__ import annotations

from typing import Any

import httpx

from handshake_order import repository as repo
from handshake_order.domain import saga
from handshake_order.settings import OrderSettings
from handshake_shared.db import Database
from handshake_shared.http import Problem
from handshake_shared.outbox import Outbox


def not_ready(order: Any, **extra: Any) -> Problem:
    return Problem(
        409,
        "Payment not ready",
        f"the order is {order.state}; the payment session is not created yet",
        type="payment-not-ready",
        retry_after_seconds=1,
        **extra,
    )


def _unavailable() -> Problem:
    return Problem(503, "Payment service unavailable", "try again shortly", type="payment-unavailable")


async def fetch(http: httpx.AsyncClient | None, settings: OrderSettings, order: Any) -> dict[str, Any]:
    if order.payment_intent_id is None:
        # Payment creates the intent before the order hears of it, so the order's own row answers "not yet"
        # without asking payment. The version lets a storefront wait for the order to change
        # (GET /v1/orders/{id}?wait_for_change=<version>) instead of asking again on a timer.
        raise not_ready(order, version=order.version)
    assert http is not None  # the app's client, open while the app runs
    try:
        upstream = await http.get(
            f"{settings.payment_internal_url}/internal/v1/orders/{order.id}/payment-session",
            headers={"Authorization": "Bearer " + settings.payment_internal_token.get_secret_value()},
            timeout=5.0,
        )
    except httpx.HTTPError:
        raise _unavailable() from None
    if upstream.status_code == 404:
        raise not_ready(order)
    if upstream.status_code != 200:
        raise _unavailable()
    # the client secret is passed through, never logged or stored here
    session: dict[str, Any] = upstream.json()
    return session


async def open_hold(db: Database, outbox: Outbox, settings: OrderSettings, order: Any) -> None:
    """The guest now holds the client secret: ask inventory for the full hold (once, under the order lock)."""
    if order.hold_seconds is None or order.payment_session_opened:
        return
    async with db.transaction() as conn:
        row = await repo.lock_order(conn, order.id)
        assert row is not None  # read a moment ago, and orders are never deleted
        decision = saga.open_payment_session(repo.view_of(row), settings.checkout_hold_seconds)
        await repo.apply(conn, outbox, decision, actor=order.customer_id or "guest")
