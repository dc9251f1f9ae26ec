"""HTTP routes of the order service (thin: parse, call one thing, answer)."""

from __future__ import annotations

import asyncio
import hmac
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from handshake_order import announcements, approvals
from handshake_order import idempotency as idem
from handshake_order import repository as repo
from handshake_order.changes import OrderChanges
from handshake_order.checkout import PRINTABLE, Checkout, CheckoutRequest, pricing_problem, quote, token_hash
from handshake_order.db import catalogue_changes, coupons, products, refunds, shipping_rates, tax_rates
from handshake_order.domain import operations as ops
from handshake_order.domain import saga
from handshake_order.domain.pricing import PricingError
from handshake_order.domain.states import OrderState
from handshake_order.search import BadCursor, OrderSearch, search
from handshake_order.settings import OrderSettings
from handshake_shared.auth import principal_from_header, require_roles
from handshake_shared.db import Database
from handshake_shared.http import Problem, require_idempotency_key
from handshake_shared.money import MAX_AMOUNT, Currency
from handshake_shared.outbox import Outbox
from handshake_shared.rate_limit import client_address

Authorization = Annotated[str | None, Header()]
OrderToken = Annotated[str | None, Header()]


def refuse_query_token(request: Request) -> None:
    """A lookup token in a URL ends up in access logs, proxies and browser history: header only."""
    if "token" in request.query_params:
        raise Problem(
            400,
            "Lookup token in the URL",
            "send the order's lookup token in the X-Order-Token header, never in the query string",
            type="token-in-query",
        )


def staff_actor(subject: str) -> str:
    # audit rows name the person; the prefix keeps a staff subject from reading as a customer id
    return f"staff:{subject}"


@dataclass
class OrderContext:
    db: Database
    settings: OrderSettings
    checkout: Checkout
    outbox: Outbox
    http: httpx.AsyncClient | None = None
    scanner: Any = None
    changes: OrderChanges | None = None


# an INTEGER column
MAX_INT = 2**31 - 1
# a long-poll waits this long unless asked for less; the most it may ask for stays below common proxy idle timeouts
DEFAULT_WAIT_SECONDS = 20.0
MAX_WAIT_SECONDS = 30.0


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    name: str = Field(min_length=1, max_length=200, pattern=PRINTABLE)
    unit_price: int = Field(ge=0, le=MAX_AMOUNT)
    currency: Currency
    active: bool = True


class CouponFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    max_redemptions: int | None = Field(default=None, ge=1, le=MAX_INT)
    expires_at: AwareDatetime | None = None
    active: bool = True
    once_per_customer: bool = False


# Each kind carries exactly the fields it is priced with; the other kind's fields are stored empty, so an
# upsert that changes a coupon's kind leaves nothing of the old one behind.
class PercentCouponIn(CouponFields):
    kind: Literal["percent"]
    percent_bp: int = Field(gt=0, le=10_000)
    amount_off: None = None
    currency: None = None


class FixedCouponIn(CouponFields):
    kind: Literal["fixed"]
    amount_off: int = Field(gt=0, le=MAX_AMOUNT)
    currency: Currency
    percent_bp: None = None


CouponIn = Annotated[PercentCouponIn | FixedCouponIn, Field(discriminator="kind")]


class TaxRateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field(min_length=2, max_length=16, pattern=PRINTABLE)
    rate_bp: int = Field(ge=0, le=10_000)


class ShippingRateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=32, pattern=PRINTABLE)
    amount: int = Field(ge=0, le=MAX_AMOUNT)
    currency: Currency


class EmptyBody(BaseModel):
    pass


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int = Field(gt=0, le=MAX_AMOUNT, description="minor units")
    reason: str = Field(min_length=3, max_length=500, pattern=PRINTABLE)
    restock: bool = False
    request_approval: bool = Field(
        default=False,
        description="support above its limit: ask finance to approve "
        "instead of being refused (202 with the pending approval)",
    )

    def idempotency_view(self) -> dict[str, Any]:
        # without the flag it hashes as before the flag existed: a retry across the release keeps its answer
        return self.model_dump(mode="json", exclude=None if self.request_approval else {"request_approval"})


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=3, max_length=2000, pattern=PRINTABLE)


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500, pattern=PRINTABLE)


class _NeedsApproval(Exception):
    """Support asked above its limit with request_approval: the refund transaction rolls back and an approval
    request is recorded instead."""


# states a person may set by hand; money-moving states are reached only through the saga
MANUAL_TARGETS = {
    OrderState.NEEDS_REVIEW,
    OrderState.CANCELLED,
    OrderState.FULFILLED,
    OrderState.PARTIALLY_FULFILLED,
    OrderState.CLOSED,
}


class TransitionIn(ReasonIn):
    """A manual transition, or the state a closed review leaves the order in."""

    to: OrderState


class CatalogueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500, pattern=PRINTABLE)
    # one upsert is one transaction; larger catalogues go in several
    products: list[ProductIn] = Field(default=[], max_length=1000)
    coupons: list[CouponIn] = Field(default=[], max_length=1000)
    tax_rates: list[TaxRateIn] = Field(default=[], max_length=1000)
    shipping_rates: list[ShippingRateIn] = Field(default=[], max_length=1000)


def build_router(ctx: OrderContext) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/products")
    async def list_products() -> dict[str, Any]:
        async with ctx.db.read() as conn:
            rows = (await conn.execute(select(products).where(products.c.active).order_by(products.c.sku))).all()
        return {"products": [dict(r._mapping) for r in rows]}

    @router.post("/v1/quotes")
    async def create_quote(req: CheckoutRequest) -> dict[str, Any]:
        async with ctx.db.read() as conn:
            try:
                snapshot = await quote(conn, req, max_units=ctx.settings.max_units_per_order)
            except PricingError as err:
                raise pricing_problem(err) from None
        return snapshot.model_dump(mode="json")

    @router.post("/v1/checkout", status_code=202)
    async def checkout(
        req: CheckoutRequest,
        request: Request,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
        traceparent: Annotated[str | None, Header()] = None,
        guest_session: Annotated[
            str | None,
            Header(description="guests: this browser's random secret, >= 128 bits; scopes the Idempotency-Key"),
        ] = None,
    ) -> JSONResponse:
        key = require_idempotency_key(idempotency_key)
        principal = principal_from_header(ctx.settings, authorization)
        address = client_address(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            ctx.settings.trusted_proxy_hops,
        )
        status, body, replayed = await ctx.checkout.place(principal, key, req, traceparent, guest_session, address)
        headers = {"Location": body["links"]["self"]}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return idem.CanonicalJSONResponse(body, status_code=status, headers=headers)

    async def readable_order(
        order_id: str, authorization: str | None, token: str | None, *, with_timeline: bool = True
    ) -> Any:
        """Owner or lookup-token holder only; anyone else gets the same 404 as for a missing order. Staff
        read through /v1/admin/orders: a staff role is not ownership, so nothing done here is done by staff
        in a customer's name."""
        try:
            oid = uuid.UUID(order_id)
        except ValueError:
            raise Problem(404, "Order not found", type="order-not-found") from None
        principal = principal_from_header(ctx.settings, authorization)
        async with ctx.db.read() as conn:
            order = await repo.get_order(conn, oid)
            allowed = order is not None and (
                (principal is not None and order.customer_id == principal.subject)
                or (
                    token is not None
                    and order.lookup_token_hash is not None
                    and hmac.compare_digest(order.lookup_token_hash, token_hash(token))
                )
            )
            if not allowed:
                raise Problem(404, "Order not found", type="order-not-found")
            events = await repo.timeline(conn, oid) if with_timeline else None
        return order, events

    def order_body(order: Any, events: list[dict[str, Any]] | None) -> dict[str, Any]:
        body = {
            "order_id": str(order.id),
            "reference": ops.reference_of(order.id),
            "state": order.state,
            "version": order.version,
            "total": order.total,
            "currency": order.currency,
            "snapshot": order.snapshot,
            "payment_intent_id": order.payment_intent_id,
            "created_at": order.created_at.isoformat(),
            "updated_at": order.updated_at.isoformat(),
        }
        if events is not None:
            body["timeline"] = events
        return body

    async def changed_order(
        order_id: str, authorization: str | None, token: str | None, *, known: int, timeout: float
    ) -> Any:
        """The order once its version differs from `known`, or as it is when the timeout passes. The waiter is
        registered before the version is read, so a commit landing between that read and the wait still wakes
        it; each wake re-reads the row, the notification being only a hint."""
        assert ctx.changes is not None
        oid = repo.parse_order_id(order_id)
        if oid is None:
            raise Problem(404, "Order not found", type="order-not-found")
        with ctx.changes.watch(oid) as changed:
            order, _ = await readable_order(order_id, authorization, token, with_timeline=False)
            if changed is None:  # as many requests waiting as the process takes: answer now, the client asks again
                return order
            deadline = asyncio.get_running_loop().time() + timeout
            while order.version == known and not ctx.changes.stopping:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    break
                changed.clear()
                async with ctx.db.read() as conn:
                    order = await repo.get_order(conn, oid)
        return order

    @router.get("/v1/orders/{order_id}")
    async def get_order(
        order_id: str,
        request: Request,
        response: Response,
        authorization: Authorization = None,
        x_order_token: OrderToken = None,
        timeline: Annotated[bool, Query(description="false: leave the transition timeline out")] = True,
        wait_for_change: Annotated[
            int | None,
            Query(
                ge=0,
                le=2**63 - 1,
                description="a version this client has seen: answer once the order's version differs "
                "(at once if it already does), or when the timeout passes",
            ),
        ] = None,
        timeout: Annotated[
            float, Query(gt=0, le=MAX_WAIT_SECONDS, description="seconds to wait for a change (with wait_for_change)")
        ] = DEFAULT_WAIT_SECONDS,
    ) -> dict[str, Any]:
        refuse_query_token(request)
        if wait_for_change is None:
            order, events = await readable_order(order_id, authorization, x_order_token, with_timeline=timeline)
        else:
            order = await changed_order(order_id, authorization, x_order_token, known=wait_for_change, timeout=timeout)
            events = None
            if timeline:
                async with ctx.db.read() as conn:
                    order = await repo.get_order(conn, order.id)
                    events = await repo.timeline(conn, order.id)
        response.headers["ETag"] = f'"{order.version}"'
        return order_body(order, events)

    @router.get("/v1/orders/{order_id}/payment-session")
    async def payment_session(
        order_id: str,
        request: Request,
        response: Response,
        authorization: Authorization = None,
        x_order_token: OrderToken = None,
    ) -> dict[str, Any]:
        refuse_query_token(request)
        order, _ = await readable_order(order_id, authorization, x_order_token, with_timeline=False)
        response.headers["Cache-Control"] = "no-store"
        if order.payment_intent_id is None:
            # Payment creates the intent before the order hears of it, so the order's own row answers "not yet"
            # without asking payment. The version lets a storefront wait for the order to change
            # (GET /v1/orders/{id}?wait_for_change=<version>) instead of asking again on a timer.
            raise Problem(
                409,
                "Payment not ready",
                f"the order is {order.state}; the payment session is not created yet",
                type="payment-not-ready",
                retry_after_seconds=1,
                version=order.version,
            )
        assert ctx.http is not None
        try:
            upstream = await ctx.http.get(
                f"{ctx.settings.payment_internal_url}/internal/v1/orders/{order.id}/payment-session",
                headers={"Authorization": "Bearer " + ctx.settings.payment_internal_token.get_secret_value()},
                timeout=5.0,
            )
        except httpx.HTTPError:
            raise Problem(503, "Payment service unavailable", "try again shortly", type="payment-unavailable") from None
        if upstream.status_code == 404:
            raise Problem(
                409,
                "Payment not ready",
                f"the order is {order.state}; the payment session is not created yet",
                type="payment-not-ready",
                retry_after_seconds=1,
            )
        if upstream.status_code != 200:
            raise Problem(503, "Payment service unavailable", "try again shortly", type="payment-unavailable")
        if order.hold_seconds is not None and not order.payment_session_opened:
            await open_payment_session(order)
        # the client secret is passed through, never logged or stored here
        return upstream.json()

    async def open_payment_session(order: Any) -> None:
        """The guest now holds the client secret: ask inventory for the full hold (once, under the order lock)."""
        async with ctx.db.transaction() as conn:
            row = await repo.lock_order(conn, order.id)
            decision = saga.open_payment_session(repo.view_of(row), ctx.settings.checkout_hold_seconds)
            await repo.apply(conn, ctx.outbox, decision, actor=order.customer_id or "guest")

    async def command(
        order_id: uuid.UUID,
        decide: Any,
        *,
        actor: str,
        scope: str | None = None,
        key: str | None = None,
        request: BaseModel | dict[str, Any] | None = None,
        command_name: str = "",
        status: int = 200,
        respond: Any = None,
    ) -> JSONResponse:
        """Lock the order, let the saga decide, apply; with a key, answer a retry from the stored response."""
        async with ctx.db.transaction() as conn:
            if key is not None:
                assert scope is not None and request is not None
                stored = await idem.claim(
                    conn,
                    scope=scope,
                    key=key,
                    request_hash=idem.fingerprint(command_name, request),
                    command=command_name,
                )
                if stored is not None:
                    return idem.CanonicalJSONResponse(
                        stored[1], status_code=stored[0], headers={"Idempotent-Replayed": "true"}
                    )
            row = await repo.lock_order(conn, order_id)
            if row is None:
                raise Problem(404, "Order not found", type="order-not-found")
            try:
                decision = decide(repo.view_of(row))
            except saga.CommandRefused as refused:
                title = "Too many payment attempts" if refused.status == 429 else "Not possible in this state"
                raise Problem(refused.status, title, refused.detail, type=refused.code, state=row.state) from None
            body = {"order_id": str(order_id), "state": decision.view.state.value}
            if respond is not None:
                body.update(await respond(conn, decision))
            await repo.apply(conn, ctx.outbox, decision, actor=actor)
            if key is not None:
                assert scope is not None
                await idem.store(conn, scope=scope, key=key, status=status, body=body, order_id=order_id)
        return idem.CanonicalJSONResponse(body, status_code=status)

    async def keyed(
        *, scope: str, key: str, request: BaseModel | dict[str, Any], command_name: str, status: int, work: Any
    ) -> JSONResponse:
        """A staff action that is not one saga decision, done once per Idempotency-Key: the claim, the work and
        the stored answer in one transaction (see idempotency.py)."""
        async with ctx.db.transaction() as conn:
            stored = await idem.claim(
                conn, scope=scope, key=key, request_hash=idem.fingerprint(command_name, request), command=command_name
            )
            if stored is not None:
                return idem.CanonicalJSONResponse(
                    stored[1], status_code=stored[0], headers={"Idempotent-Replayed": "true"}
                )
            body = await work(conn)
            await idem.store(
                conn,
                scope=scope,
                key=key,
                status=status,
                body=body,
                order_id=uuid.UUID(body["order_id"]) if body.get("order_id") else None,
            )
        return idem.CanonicalJSONResponse(body, status_code=status)

    async def locked_order(conn: Any, oid: uuid.UUID) -> Any:
        row = await repo.lock_order(conn, oid)
        if row is None:
            raise Problem(404, "Order not found", type="order-not-found")
        return row

    def order_id_or_404(order_id: str) -> uuid.UUID:
        oid = repo.parse_order_id(order_id)
        if oid is None:
            raise Problem(404, "Order not found", type="order-not-found")
        return oid

    def refused_problem(refused: saga.CommandRefused, state: str) -> Problem:
        return Problem(refused.status, "Not possible in this state", refused.detail, type=refused.code, state=state)

    @router.post("/v1/orders/{order_id}/cancel")
    async def cancel_order(
        order_id: str, request: Request, authorization: Authorization = None, x_order_token: OrderToken = None
    ) -> JSONResponse:
        refuse_query_token(request)
        order, _ = await readable_order(order_id, authorization, x_order_token, with_timeline=False)
        if order.state == OrderState.CANCELLED:
            return JSONResponse({"order_id": str(order.id), "state": order.state})
        return await command(order.id, saga.cancel_by_customer, actor=order.customer_id or "guest")

    @router.post("/v1/orders/{order_id}/payment-attempts", status_code=202)
    async def new_payment_attempt(
        order_id: str,
        request: Request,
        authorization: Authorization = None,
        x_order_token: OrderToken = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        refuse_query_token(request)
        key = require_idempotency_key(idempotency_key)
        order, _ = await readable_order(order_id, authorization, x_order_token, with_timeline=False)
        return await command(
            order.id,
            lambda view: saga.retry_payment(
                view, seed=f"retry:{key}", max_attempts=ctx.settings.max_payment_attempts_per_order
            ),
            actor=order.customer_id or "guest",
            scope=f"order:{order.id}",
            key=key,
            request=EmptyBody(),
            command_name="payment-attempt",
            status=202,
        )

    @router.get("/v1/admin/orders/{order_id}")
    async def admin_get_order(order_id: str, authorization: Authorization = None) -> dict[str, Any]:
        require_roles(ctx.settings, authorization, "support", "finance", "admin")
        oid = repo.parse_order_id(order_id)
        async with ctx.db.read() as conn:
            row = await repo.get_order(conn, oid) if oid is not None else None
            if oid is None or row is None:
                raise Problem(404, "Order not found", type="order-not-found")
            body = order_body(row, await repo.timeline(conn, oid))
            body["notes"] = await repo.notes(conn, oid)
            body["refunds"] = await repo.refunds_of(conn, oid)
            body["refund_approvals"] = await approvals.of_order(conn, oid)
            body["audit"] = await repo.staff_audit(conn, oid)
        body.update(
            customer_id=row.customer_id,
            email=row.contact_email,
            captured_amount=row.captured_amount,
            refunded_amount=row.refunded_amount,
            refund_pending_amount=row.refund_pending_amount,
            stock_committed=row.stock_committed,
        )
        return body

    @router.post("/v1/admin/orders/{order_id}/refunds", status_code=202)
    async def request_refund(
        order_id: str,
        body: RefundIn,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        principal = require_roles(ctx.settings, authorization, "support", "finance")
        key = require_idempotency_key(idempotency_key)
        role = "finance" if principal.has_role("finance") else "support"
        limit = ctx.settings.support_refund_limit
        if role == "support" and body.amount > limit and not body.request_approval:
            raise Problem(
                403,
                "Refund above your limit",
                f"support may refund up to {limit} per order; ask finance",
                type="refund-limit-exceeded",
            )
        oid = order_id_or_404(order_id)
        if role == "support" and body.amount > limit:
            return await ask_for_approval(oid, body, principal.subject, key)
        refund_id = uuid.uuid4()

        async def record(conn: Any, decision: saga.Decision) -> dict[str, Any]:
            if role == "support":
                # the limit is per order, not per request: the order row is locked, so concurrent requests
                # count each other; refunds that failed or were reversed gave nothing and do not count
                granted = (
                    await conn.execute(
                        select(func.coalesce(func.sum(refunds.c.amount), 0)).where(
                            refunds.c.order_id == oid,
                            refunds.c.requested_role == "support",
                            refunds.c.state.in_(("requested", "succeeded")),
                        )
                    )
                ).scalar_one()
                if granted + body.amount > limit:
                    if body.request_approval:
                        raise _NeedsApproval
                    raise Problem(
                        403,
                        "Refund above your limit",
                        f"support may refund up to {limit} per order and {granted} is already refunded or "
                        "pending; ask finance",
                        type="refund-limit-exceeded",
                        support_refunded=int(granted),
                    )
            await repo.record_refund(
                conn,
                refund_id=refund_id,
                order_id=oid,
                amount=body.amount,
                currency=decision.view.currency,
                reason=body.reason,
                restock=body.restock,
                requested_by=principal.subject,
                requested_role=role,
            )
            return {"refund_id": str(refund_id), "refund_state": "requested", "amount": body.amount}

        try:
            return await command(
                oid,
                lambda view: saga.request_refund(
                    view,
                    refund_id=str(refund_id),
                    amount=body.amount,
                    reason=body.reason,
                    restock=body.restock,
                    actor=principal.subject,
                ),
                actor=staff_actor(principal.subject),
                scope=f"staff:{principal.subject}",
                key=key,
                request=body.idempotency_view(),
                command_name=f"refund:{oid}",
                status=202,
                respond=record,
            )
        except _NeedsApproval:
            return await ask_for_approval(oid, body, principal.subject, key)

    async def ask_for_approval(oid: uuid.UUID, body: RefundIn, subject: str, key: str) -> JSONResponse:
        """Record what support asked for, for finance to approve; answered under the refund's own key and command,
        so a retry of the request gets this answer back. Nothing moves until someone approves."""

        async def work(conn: Any) -> dict[str, Any]:
            row = await locked_order(conn, oid)
            try:  # refused now means refused at approval too: say so at once
                saga.check_refund(repo.view_of(row), amount=body.amount, restock=body.restock)
            except saga.CommandRefused as refused:
                raise refused_problem(refused, row.state) from None
            approval_id = await approvals.create(
                conn,
                order_id=oid,
                amount=body.amount,
                currency=row.currency,
                reason=body.reason,
                restock=body.restock,
                requested_by=subject,
            )
            return {"approval_id": str(approval_id), "state": "pending", "order_id": str(oid), "amount": body.amount}

        return await keyed(
            scope=f"staff:{subject}",
            key=key,
            request=body.idempotency_view(),
            command_name=f"refund:{oid}",
            status=202,
            work=work,
        )

    @router.get("/v1/admin/refund-approvals")
    async def list_refund_approvals(
        authorization: Authorization = None,
        state: Literal["pending", "approved", "rejected"] | None = None,
        order_id: uuid.UUID | None = None,
        before: Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """Newest first."""
        require_roles(ctx.settings, authorization, "support", "finance", "admin")
        async with ctx.db.read() as conn:
            try:
                return await approvals.listing(conn, state=state, order_id=order_id, before=before, limit=limit)
            except BadCursor:
                raise Problem(
                    400, "Bad cursor", "send `before` exactly as a previous page's `next`", type="bad-cursor"
                ) from None

    async def decide_approval(
        approval_id: str, body: ReasonIn, authorization: str | None, idempotency_key: str | None, *, approving: bool
    ) -> JSONResponse:
        # a requester withdraws their own request with whatever staff role they have; the rule is ops.may_decide
        roles = ("finance",) if approving else ("support", "finance", "admin")
        principal = require_roles(ctx.settings, authorization, *roles)
        key = require_idempotency_key(idempotency_key)
        aid = repo.parse_order_id(approval_id)
        if aid is None:
            raise Problem(404, "Approval not found", type="approval-not-found")

        async def work(conn: Any) -> dict[str, Any]:
            # the approval row is locked first and then the order: two people deciding at once decide once
            row = await approvals.lock(conn, aid)
            if row is None:
                raise Problem(404, "Approval not found", type="approval-not-found")
            try:
                ops.may_decide(
                    approvals.view_of(row),
                    principal.subject,
                    approving=approving,
                    finance=principal.has_role("finance"),
                )
            except ops.ApprovalRefused as refused:
                raise Problem(
                    refused.status, "Not possible", refused.detail, type=refused.code, state=row.state
                ) from None
            if not approving:
                return approvals.body(
                    await approvals.decide(
                        conn, aid, state="rejected", decided_by=principal.subject, reason=body.reason
                    )
                )
            order = await locked_order(conn, row.order_id)
            refund_id = uuid.uuid4()
            try:  # exactly the finance refund: the saga's decision, the ledger row, the order.refund_requested
                decision = saga.request_refund(
                    repo.view_of(order),
                    refund_id=str(refund_id),
                    amount=row.amount,
                    reason=row.reason,
                    restock=row.restock,
                    actor=row.requested_by,
                )
            except saga.CommandRefused as refused:
                raise refused_problem(refused, order.state) from None
            # granted under finance's authority, so it does not use up the support limit of the order
            await repo.record_refund(
                conn,
                refund_id=refund_id,
                order_id=row.order_id,
                amount=row.amount,
                currency=order.currency,
                reason=row.reason,
                restock=row.restock,
                requested_by=row.requested_by,
                requested_role="finance",
                approved_by=principal.subject,
            )
            await repo.apply(conn, ctx.outbox, decision, actor=staff_actor(principal.subject))
            decided = await approvals.decide(
                conn, aid, state="approved", decided_by=principal.subject, reason=body.reason, refund_id=refund_id
            )
            return {**approvals.body(decided), "refund_state": "requested"}

        return await keyed(
            scope=f"staff:{principal.subject}",
            key=key,
            request=body,
            command_name=f"{'approve' if approving else 'reject'}:{aid}",
            status=200,
            work=work,
        )

    @router.post("/v1/admin/refund-approvals/{approval_id}/approve")
    async def approve_refund(
        approval_id: str,
        body: ReasonIn,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        return await decide_approval(approval_id, body, authorization, idempotency_key, approving=True)

    @router.post("/v1/admin/refund-approvals/{approval_id}/reject")
    async def reject_refund(
        approval_id: str,
        body: ReasonIn,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        return await decide_approval(approval_id, body, authorization, idempotency_key, approving=False)

    @router.get("/v1/admin/orders")
    async def search_orders(
        authorization: Authorization = None,
        order_id: uuid.UUID | None = None,
        reference: Annotated[str | None, Query(pattern=ops.REFERENCE_PATTERN, description="HS-XXXXXXXX")] = None,
        customer_id: Annotated[str | None, Query(min_length=1, max_length=255, pattern=PRINTABLE)] = None,
        email: Annotated[str | None, Query(min_length=1, max_length=ops.MAX_EMAIL_LENGTH, pattern=PRINTABLE)] = None,
        payment_intent_id: Annotated[str | None, Query(min_length=1, max_length=255, pattern=PRINTABLE)] = None,
        state: Annotated[list[OrderState] | None, Query(max_length=len(OrderState))] = None,
        stuck_older_than_minutes: Annotated[
            int | None,
            Query(ge=1, le=525_600, description="unchanged for longer, and in a state that waits for something"),
        ] = None,
        before: Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """Newest first; any combination of filters."""
        require_roles(ctx.settings, authorization, "support", "finance", "admin")
        query = OrderSearch(
            order_id=order_id,
            reference=reference,
            customer_id=customer_id,
            email=email.strip().lower() if email else None,
            payment_intent_id=payment_intent_id,
            states=[s.value for s in state or ()],
            stuck_older_than_minutes=stuck_older_than_minutes,
            before=before,
            limit=limit,
        )
        async with ctx.db.read() as conn:
            try:
                return await search(conn, query)
            except BadCursor:
                raise Problem(
                    400, "Bad cursor", "send `before` exactly as a previous page's `next`", type="bad-cursor"
                ) from None

    @router.post("/v1/admin/orders/{order_id}/review")
    async def mark_for_review(
        order_id: str,
        body: NoteIn,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """Into needs_review with a note; an order already under review only gets the note."""
        principal = require_roles(ctx.settings, authorization, "support", "finance", "admin")
        key = require_idempotency_key(idempotency_key)
        oid = order_id_or_404(order_id)

        async def moved(conn: Any, decision: saga.Decision) -> dict[str, Any]:
            return {"transitioned": bool(decision.transitions)}

        return await command(
            oid,
            lambda view: ops.mark_for_review(view, body.note),
            actor=staff_actor(principal.subject),
            scope=f"staff:{principal.subject}",
            key=key,
            request=body,
            command_name=f"review:{oid}",
            respond=moved,
        )

    @router.post("/v1/admin/orders/{order_id}/review/close")
    async def close_review(
        order_id: str,
        body: TransitionIn,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        principal = require_roles(ctx.settings, authorization, "finance", "admin")
        key = require_idempotency_key(idempotency_key)
        oid = order_id_or_404(order_id)
        return await command(
            oid,
            lambda view: ops.close_review(view, body.to, body.reason),
            actor=staff_actor(principal.subject),
            scope=f"staff:{principal.subject}",
            key=key,
            request=body,
            command_name=f"close-review:{oid}",
        )

    @router.post("/v1/admin/orders/{order_id}/events/resend", status_code=202)
    async def resend_announcement(
        order_id: str,
        body: ReasonIn,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        principal = require_roles(ctx.settings, authorization, "support", "finance", "admin")
        key = require_idempotency_key(idempotency_key)
        oid = order_id_or_404(order_id)

        async def work(conn: Any) -> dict[str, Any]:
            row = await locked_order(conn, oid)
            try:
                return await announcements.resend(
                    conn, ctx.outbox, repo.view_of(row), row, actor=staff_actor(principal.subject), reason=body.reason
                )
            except ValueError as exc:
                raise Problem(
                    409,
                    "Cannot send the announcement again",
                    str(exc),
                    type="announcement-unavailable",
                    state=row.state,
                ) from None

        return await keyed(
            scope=f"staff:{principal.subject}",
            key=key,
            request=body,
            command_name=f"resend:{oid}",
            status=202,
            work=work,
        )

    @router.get("/v1/admin/orders/{order_id}/events")
    async def order_events(
        order_id: str,
        authorization: Authorization = None,
        after_id: Annotated[int, Query(ge=0, le=2**63 - 1, description="the `next_after_id` of the previous page")] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
    ) -> dict[str, Any]:
        """The order's events on order.events.v1 as the outbox holds them, in the order they were written."""
        require_roles(ctx.settings, authorization, "support", "finance", "admin")
        oid = order_id_or_404(order_id)
        async with ctx.db.read() as conn:
            if await repo.get_order(conn, oid) is None:
                raise Problem(404, "Order not found", type="order-not-found")
            return {"order_id": str(oid), **await announcements.events_of(conn, oid, after_id=after_id, limit=limit)}

    @router.post("/v1/admin/orders/{order_id}/redrive")
    async def redrive_order(
        order_id: str,
        body: ReasonIn,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """What the stuck-order scanner does for an order in this state, for this one now."""
        principal = require_roles(ctx.settings, authorization, "support", "admin")
        key = require_idempotency_key(idempotency_key)
        oid = order_id_or_404(order_id)

        async def work(conn: Any) -> dict[str, Any]:
            row = await locked_order(conn, oid)
            done = await ctx.scanner.redrive_one(conn, row, actor=staff_actor(principal.subject), reason=body.reason)
            return {"order_id": str(oid), "state": row.state, **done}

        return await keyed(
            scope=f"staff:{principal.subject}",
            key=key,
            request=body,
            command_name=f"redrive:{oid}",
            status=200,
            work=work,
        )

    @router.post("/v1/admin/stuck-orders/scan")
    async def scan_stuck_orders(authorization: Authorization = None) -> dict[str, Any]:
        require_roles(ctx.settings, authorization, "support", "admin")
        return {"stuck": await ctx.scanner.scan_once()}

    @router.post("/v1/admin/orders/{order_id}/transitions")
    async def manual_transition(
        order_id: str,
        body: TransitionIn,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        principal = require_roles(ctx.settings, authorization, "support", "admin")
        # optional here (older callers send none, and a repeated transition is refused by the table anyway); with
        # one, a double click is answered with the first answer instead of a 409
        key = require_idempotency_key(idempotency_key) if idempotency_key is not None else None
        oid = repo.parse_order_id(order_id)
        if oid is None:
            raise Problem(404, "Order not found", type="order-not-found")

        def decide(view: saga.OrderView) -> saga.Decision:
            if body.to not in MANUAL_TARGETS:
                raise saga.CommandRefused("transition-not-manual", f"{body.to} is reached only through the saga")
            if view.state == OrderState.NEEDS_REVIEW:
                # otherwise support could end a review here, which only finance may do (review/close)
                raise saga.CommandRefused(
                    "review-open", "an order under review leaves it only when finance closes the review"
                )
            if body.to == OrderState.CANCELLED and view.captured_amount > view.refunded_amount:
                raise saga.CommandRefused("money-held", "refund the captured money before cancelling")
            # announced on order.events.v1 like every transition (Decision.move)
            return saga.manual_transition(view, body.to, f"{body.reason} (manual)")

        return await command(
            oid,
            decide,
            actor=staff_actor(principal.subject),
            scope=f"staff:{principal.subject}",
            key=key,
            request=body,
            command_name=f"transition:{oid}",
        )

    @router.put("/v1/admin/catalogue")
    async def upsert_catalogue(body: CatalogueIn, authorization: Authorization = None) -> dict[str, int]:
        principal = require_roles(ctx.settings, authorization, "admin")
        async with ctx.db.transaction() as conn:
            for table, items, key, kind in (
                (products, body.products, "sku", "product"),
                (coupons, body.coupons, "code", "coupon"),
                (tax_rates, body.tax_rates, "region", "tax_rate"),
                (shipping_rates, body.shipping_rates, "code", "shipping_rate"),
            ):
                for item in items:
                    values = item.model_dump()
                    if values.get("currency"):
                        values["currency"] = values["currency"].upper()
                    before = (
                        await conn.execute(select(table).where(table.c[key] == values[key]).with_for_update())
                    ).first()
                    stmt = pg_insert(table).values(**values)
                    after = (
                        await conn.execute(
                            stmt.on_conflict_do_update(
                                index_elements=[key], set_={k: stmt.excluded[k] for k in values if k != key}
                            ).returning(*table.c)
                        )
                    ).one()
                    # in the same transaction: a price nobody can account for is never written
                    await conn.execute(
                        insert(catalogue_changes).values(
                            kind=kind,
                            key=values[key],
                            actor=staff_actor(principal.subject),
                            reason=body.reason,
                            before=jsonable_encoder(dict(before._mapping)) if before is not None else None,
                            after=jsonable_encoder(dict(after._mapping)),
                        )
                    )
        return {
            "products": len(body.products),
            "coupons": len(body.coupons),
            "tax_rates": len(body.tax_rates),
            "shipping_rates": len(body.shipping_rates),
        }

    @router.get("/v1/admin/catalogue/changes")
    async def catalogue_history(
        authorization: Authorization = None,
        kind: Literal["product", "coupon", "tax_rate", "shipping_rate"] | None = None,
        key: Annotated[str | None, Query(min_length=1, max_length=64, pattern=PRINTABLE)] = None,
        before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Newest first; page with before_id = the last id seen."""
        require_roles(ctx.settings, authorization, "admin", "finance", "support")
        stmt = select(catalogue_changes).order_by(catalogue_changes.c.id.desc()).limit(limit)
        if kind is not None:
            stmt = stmt.where(catalogue_changes.c.kind == kind)
        if key is not None:
            stmt = stmt.where(catalogue_changes.c.key == key)
        if before_id is not None:
            stmt = stmt.where(catalogue_changes.c.id < before_id)
        async with ctx.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return {
            "changes": [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "key": r.key,
                    "actor": r.actor,
                    "reason": r.reason,
                    "before": r.before,
                    "after": r.after,
                    "at": r.at.isoformat(),
                }
                for r in rows
            ]
        }

    return router
