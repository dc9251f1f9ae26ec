"""HTTP routes of the payment service (thin: parse, call one thing, answer).

The client secret is read from Stripe on every request and passed straight through: it is never stored,
logged or put on a topic."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import stripe
import structlog
from fastapi import APIRouter, Body, Depends, Header, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from handshake_payment import idempotency
from handshake_payment.live_view import add_live_views
from handshake_payment.reconciliation.reconciler import Reconciler, list_runs
from handshake_payment.settings import PaymentSettings
from handshake_payment.store import attempts as repo
from handshake_payment.store import refunds as refund_repo
from handshake_payment.stripe_gateway import StripeGateway
from handshake_shared.admin_api import Reason, staff_with
from handshake_shared.auth import Principal, check_service_credential, require_roles
from handshake_shared.db import Database
from handshake_shared.http import Problem, require_idempotency_key

log = structlog.get_logger("payment")

Authorization = Annotated[str | None, Header()]

# Text a request may carry: no control characters (PostgreSQL cannot store NUL, not even inside JSONB).
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"


class ReconciliationRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500, pattern=PRINTABLE, description="kept on the run record")


class OrderReconciliationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = Field(description="why staff ask (kept on the run record as its note)")


@dataclass
class PaymentContext:
    db: Database
    settings: PaymentSettings
    gateway: StripeGateway
    reconciler: Reconciler


def _order_uuid(order_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(order_id)
    except ValueError:
        raise Problem(404, "Order not found", type="order-not-found") from None


def build_router(ctx: PaymentContext) -> APIRouter:
    router = APIRouter()

    @router.get("/internal/v1/orders/{order_id}/payment-session")
    async def payment_session(order_id: str, response: Response, authorization: Authorization = None) -> dict[str, Any]:
        check_service_credential(ctx.settings.internal_api_tokens, authorization)
        oid = _order_uuid(order_id)
        async with ctx.db.read() as conn:
            attempt = await repo.session_attempt(conn, oid)
        if attempt is None:
            raise Problem(
                404, "No payment session", "the order has no payment intent yet", type="payment-session-not-found"
            )
        assert attempt.provider_intent_id is not None  # session_attempt picks only attempts with an intent
        try:
            intent = await ctx.gateway.retrieve_intent(attempt.provider_intent_id)
        except stripe.StripeError as exc:
            log.warning("payment intent retrieval failed", attempt_id=str(attempt.id), error=type(exc).__name__)
            raise Problem(
                503, "Payment provider unavailable", "try again shortly", type="provider-unavailable"
            ) from None
        response.headers["Cache-Control"] = "no-store"
        return {
            "order_id": str(attempt.order_id),
            "attempt_id": str(attempt.id),
            "payment_intent_id": intent.id,
            "client_secret": intent.client_secret,
            "amount": intent.amount,
            "currency": intent.currency.upper(),
            "status": intent.status,
        }

    @router.get("/v1/admin/orders/{order_id}/payments")
    async def admin_payments(
        order_id: str,
        live: Annotated[bool, Query(description="also ask Stripe now about each attempt's PaymentIntent")] = False,
        authorization: Authorization = None,
    ) -> dict[str, Any]:
        require_roles(ctx.settings, authorization, "support", "finance", "admin")
        oid = _order_uuid(order_id)
        async with ctx.db.read() as conn:
            attempts = await repo.attempts_of_order(conn, oid)
            refunds = await refund_repo.refunds_of_order(conn, oid)
        if live:
            # after the connection is given back: no database connection waits on the provider
            await add_live_views(
                ctx.gateway,
                attempts,
                max_fetches=ctx.settings.admin_live_max_fetches,
                timeout=ctx.settings.admin_live_fetch_timeout_seconds,
            )
        return {"order_id": str(oid), "attempts": attempts, "refunds": refunds}

    @router.get("/v1/admin/payments")
    async def find_payments(
        provider_intent_id: Annotated[str, Query(min_length=1, max_length=255, pattern=PRINTABLE)],
        authorization: Authorization = None,
    ) -> dict[str, Any]:
        """The attempt that created a PaymentIntent, whatever became of it (failed, cancelled, a duplicate):
        what a customer's bank statement or the Stripe dashboard shows leads to the order."""
        require_roles(ctx.settings, authorization, "support", "finance", "admin")
        async with ctx.db.read() as conn:
            attempt = await repo.by_intent(conn, provider_intent_id)
        return {"payments": [] if attempt is None else [repo.attempt_summary(attempt)]}

    @router.post("/v1/admin/reconciliation-runs", status_code=201)
    async def start_reconciliation(
        body: Annotated[ReconciliationRunIn | None, Body()] = None, authorization: Authorization = None
    ) -> dict[str, Any]:
        """Run reconciliation now and answer with the run's record (what it checked, repaired, flagged)."""
        principal = require_roles(ctx.settings, authorization, "finance", "admin")
        note = body.reason if body else None
        log.info("reconciliation run requested", requested_by=principal.subject, reason=note)
        try:
            return await ctx.reconciler.run_once(trigger="manual", requested_by=principal.subject, note=note or None)
        except Exception as exc:
            # the exception's text may quote SQL or the provider's answer: it stays in the log and on the run
            log.warning("manual reconciliation run failed", error=repr(exc)[:300])
            raise Problem(
                503, "Reconciliation failed", f"{type(exc).__name__}; see the run record", type="reconciliation-failed"
            ) from None

    @router.post("/v1/admin/orders/{order_id}/reconciliation", status_code=201)
    async def reconcile_order(
        order_id: str,
        body: OrderReconciliationIn,
        idempotency_key: Annotated[str | None, Header()] = None,
        principal: Principal = Depends(staff_with(ctx.settings, "support", "finance", "admin")),  # noqa: B008
    ) -> Any:
        """Reconcile one order now: its attempts and refunds checked with the provider whatever their age,
        recorded as a run (trigger manual-order). A repeat with the same Idempotency-Key answers the first run."""
        oid = _order_uuid(order_id)
        key = require_idempotency_key(idempotency_key)
        scope = f"order-reconciliation:{principal.subject}"
        request_hash = idempotency.fingerprint("order-reconciliation", {"order_id": str(oid), "reason": body.reason})

        async def claim(conn: Any, run_id: uuid.UUID) -> None:
            await idempotency.claim(conn, scope=scope, key=key, request_hash=request_hash, run_id=run_id)

        async def keep_answer(conn: Any, record: dict[str, Any]) -> None:
            await idempotency.answer(conn, scope=scope, key=key, status=201, body=record)

        log.info("order reconciliation requested", order_id=str(oid), requested_by=principal.subject)
        try:
            # a run that broke off is answered with its record (errors counted), as its repeat will be
            return await ctx.reconciler.run_once(
                trigger="manual-order",
                requested_by=principal.subject,
                note=body.reason,
                order_id=oid,
                on_start=claim,
                on_finish=keep_answer,
                raise_failure=False,
            )
        except idempotency.KeyTaken:
            async with ctx.db.read() as conn:
                status, first = await idempotency.stored_answer(
                    conn, scope=scope, key=key, request_hash=request_hash, command="order-reconciliation"
                )
            return JSONResponse(first, status_code=status, headers={"Idempotent-Replayed": "true"})

    @router.get("/v1/admin/reconciliation-runs")
    async def reconciliation_runs(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        order_id: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
        authorization: Authorization = None,
    ) -> dict[str, Any]:
        """Newest first. With order_id (support may ask too): the runs asked for that order and the runs that
        repaired, flagged or failed on one of its attempts or refunds."""
        if order_id is None:
            require_roles(ctx.settings, authorization, "finance", "admin")
        else:
            require_roles(ctx.settings, authorization, "support", "finance", "admin")
        oid = _order_uuid(order_id) if order_id is not None else None
        async with ctx.db.read() as conn:
            runs = await list_runs(conn, limit, order_id=oid)
        return {"runs": runs}

    return router
