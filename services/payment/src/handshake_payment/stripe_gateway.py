"""Every call this service makes to Stripe, through the official SDK, timed and counted.

Nothing here touches the database: callers never hold a transaction open across a provider call."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import stripe

from handshake_payment import metrics
from handshake_payment.domain.attempts import OPEN_INTENT_STATUSES
from handshake_payment.settings import PaymentSettings


def is_permanent(exc: stripe.StripeError) -> bool:
    """The provider refused the request itself (bad amount, currency, card): repeating it cannot help.
    Authentication, permission, rate-limit, 404 and 5xx errors are configuration or transient: retry."""
    if isinstance(exc, stripe.CardError):
        return True
    return isinstance(exc, stripe.InvalidRequestError) and exc.http_status == 400


@dataclass(frozen=True)
class Refusal:
    """The provider refused a request itself (amount, currency, card, state of the object): final."""

    code: str | None
    message: str | None


def refusal_of(exc: stripe.StripeError) -> Refusal:
    return Refusal(code=exc.code, message=exc.user_message or str(exc))


class StripeGateway:
    def __init__(self, settings: PaymentSettings) -> None:
        self.capture_method = settings.capture_method
        self._http = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self.client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses=base,  # type: ignore[arg-type]
            http_client=self._http,
            max_network_retries=settings.stripe_max_network_retries,
        )

    @asynccontextmanager
    async def _call(self, operation: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            metrics.PROVIDER_ERRORS.labels(operation, type(exc).__name__).inc()
            raise
        finally:
            metrics.PROVIDER_SECONDS.labels(operation).observe(time.perf_counter() - started)

    async def create_intent(
        self, *, attempt_id: str, order_id: str, amount: int, currency: str, idempotency_key: str
    ) -> stripe.PaymentIntent:
        async with self._call("payment_intents.create"):
            return await self.client.v1.payment_intents.create_async(
                params={
                    "amount": amount,
                    "currency": currency.lower(),
                    "capture_method": self.capture_method,
                    "metadata": {"order_id": order_id, "attempt_id": attempt_id},
                },
                # no SDK retry: a retry after a lost answer creates a second intent wherever the idempotency
                # key is not honoured (localstripe; Stripe after 24 hours). The caller looks first, then retries
                options={"idempotency_key": idempotency_key, "max_network_retries": 0},
            )

    async def find_intent(self, attempt_id: str, *, not_before: float | None = None) -> stripe.PaymentIntent | None:
        """The PaymentIntent created for attempt_id, if one exists, found by its metadata (the search API
        is not everywhere: localstripe lacks it). Stripe lists newest first: once the listing is seen to
        descend and reaches intents older than not_before (epoch seconds), nothing older can be ours."""
        async with self._call("payment_intents.list"):
            page = await self.client.v1.payment_intents.list_async(params={"limit": 100})
            previous: int | None = None
            async for intent in page.auto_paging_iter():
                if (intent.to_dict().get("metadata") or {}).get("attempt_id") == attempt_id:
                    return intent
                created = int(intent.created or 0)
                descending = previous is not None and created < previous
                if descending and not_before is not None and created < not_before:
                    return None
                previous = created
        return None

    async def retrieve_intent(self, intent_id: str) -> stripe.PaymentIntent:
        async with self._call("payment_intents.retrieve"):
            return await self.client.v1.payment_intents.retrieve_async(intent_id)

    async def retrieve_event(self, event_id: str) -> dict[str, Any] | None:
        """The event as the provider holds it, as plain JSON (the SDK's objects are not a faithful copy of
        it); None when the provider has no such event (never had it, or it is older than its 30 days)."""
        try:
            async with self._call("events.retrieve"):
                event = await self.client.v1.events.retrieve_async(event_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise
        response = event.last_response
        return json.loads(response.body) if response is not None else event.to_dict()

    async def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> stripe.PaymentIntent:
        # no cancellation_reason: localstripe refuses any parameter on cancel
        async with self._call("payment_intents.cancel"):
            return await self.client.v1.payment_intents.cancel_async(
                intent_id, options={"idempotency_key": idempotency_key}
            )

    async def close_intent(self, intent_id: str, *, idempotency_key: str) -> stripe.PaymentIntent:
        """Cancel the intent if Stripe still lets us (nothing taken yet) and return it as it now stands. A
        payment that landed between our look and our cancel makes the cancel fail: the payment stands."""
        intent = await self.retrieve_intent(intent_id)
        if intent.status not in OPEN_INTENT_STATUSES:
            return intent
        try:
            return await self.cancel_intent(intent_id, idempotency_key=idempotency_key)
        except stripe.StripeError as exc:
            if not is_permanent(exc):
                raise
            current = await self.retrieve_intent(intent_id)
            if current.status in OPEN_INTENT_STATUSES:
                raise
            return current

    async def capture_intent(self, intent_id: str, *, amount: int, idempotency_key: str) -> stripe.PaymentIntent:
        async with self._call("payment_intents.capture"):
            return await self.client.v1.payment_intents.capture_async(
                intent_id, params={"amount_to_capture": amount}, options={"idempotency_key": idempotency_key}
            )

    async def find_refund(self, intent_id: str, refund_id: str) -> stripe.Refund | None:
        """The provider refund we asked for under refund_id, if one exists: the metadata carries our id, so
        this finds a refund made just before a crash even where the idempotency key does not (localstripe
        ignores it, Stripe forgets it after 24 hours)."""
        async with self._call("refunds.list"):
            page = await self.client.v1.refunds.list_async(params={"payment_intent": intent_id, "limit": 100})
            async for refund in page.auto_paging_iter():
                if (refund.to_dict().get("metadata") or {}).get("refund_id") == refund_id:
                    return refund
        return None

    async def create_refund(
        self, *, intent_id: str, amount: int, order_id: str, refund_id: str, idempotency_key: str
    ) -> stripe.Refund:
        async with self._call("refunds.create"):
            return await self.client.v1.refunds.create_async(
                params={
                    "payment_intent": intent_id,
                    "amount": amount,
                    "metadata": {"order_id": order_id, "refund_id": refund_id},
                },
                # no SDK retry after a lost answer: the caller's retry looks the refund up by metadata first
                options={"idempotency_key": idempotency_key, "max_network_retries": 0},
            )

    async def aclose(self) -> None:
        await self._http.close_async()
