"""Stripe's view of an order's attempts, fetched now for a person looking at the order.

Read-only and outside any transaction. Each fetch has its own deadline and a request fetches a bounded number
of intents, so a slow or failing provider costs a staff page a few seconds at worst and never fails it: the
attempt it could not fetch says why instead."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import stripe
import structlog

from handshake_payment.domain.live import provider_live_agrees
from handshake_payment.stripe_gateway import StripeGateway

log = structlog.get_logger("payment")


def _charge_id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


async def _fetch(gateway: StripeGateway, intent_id: str, timeout: float) -> dict[str, Any]:
    try:
        intent = (await asyncio.wait_for(gateway.retrieve_intent(intent_id), timeout)).to_dict()
    except TimeoutError:
        return {"error": f"the provider did not answer within {timeout:g} s"}
    except stripe.StripeError as exc:
        # the class and status say enough; the provider's message may quote the request
        log.warning("live intent retrieval failed", payment_intent_id=intent_id, error=type(exc).__name__)
        status = f" (HTTP {exc.http_status})" if exc.http_status else ""
        return {"error": f"provider error: {type(exc).__name__}{status}"}
    except Exception as exc:
        log.warning("live intent retrieval failed", payment_intent_id=intent_id, error=repr(exc)[:300])
        return {"error": f"provider call failed: {type(exc).__name__}"}
    currency = intent.get("currency")
    return {
        "status": intent.get("status"),
        "amount": intent.get("amount"),
        "amount_received": intent.get("amount_received"),
        "currency": currency.upper() if isinstance(currency, str) else None,
        "latest_charge": _charge_id(intent.get("latest_charge")),
        "fetched_at": datetime.now(UTC).isoformat(),
        "_payment_error": bool(intent.get("last_payment_error")),
    }


async def add_live_views(
    gateway: StripeGateway, attempts: list[dict[str, Any]], *, max_fetches: int, timeout: float
) -> None:
    """Sets provider_live and provider_live_agrees on each attempt (both null for an attempt with no intent).
    The newest max_fetches attempts with an intent are fetched, concurrently; older ones say they were not."""
    with_intent = [a for a in attempts if a.get("payment_intent_id")]
    fetched = with_intent[-max_fetches:] if max_fetches > 0 else []
    views = await asyncio.gather(*(_fetch(gateway, a["payment_intent_id"], timeout) for a in fetched))
    by_attempt = {a["attempt_id"]: v for a, v in zip(fetched, views, strict=True)}
    for attempt in attempts:
        if not attempt.get("payment_intent_id"):
            attempt["provider_live"], attempt["provider_live_agrees"] = None, None
            continue
        view = by_attempt.get(attempt["attempt_id"])
        if view is None:
            view = {"error": f"not fetched: only the newest {max_fetches} attempts are fetched live"}
        if "error" in view:
            attempt["provider_live"], attempt["provider_live_agrees"] = view, None
            continue
        payment_error = view.pop("_payment_error")
        attempt["provider_live"] = view
        attempt["provider_live_agrees"] = provider_live_agrees(
            attempt["state"],
            attempt["amount"],
            attempt["currency"],
            live_status=view["status"],
            live_amount=view["amount"],
            live_currency=view["currency"],
            payment_error=payment_error,
        )
