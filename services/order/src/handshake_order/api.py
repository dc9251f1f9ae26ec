"""HTTP routes of the order service: each parses its request, calls one thing and answers.

Who may do what is access.py; how a command runs (Idempotency-Key, order lock, saga decision, apply) is
commands.py; what an order looks like to whom is views.py; the catalogue is catalogue.py, staff search
search.py, refund approvals approvals.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from handshake_order import access, announcements, approvals, catalogue, payment_sessions, views
from handshake_order import idempotency as idem
from handshake_order import repository as repo
from handshake_order.access import MANUAL_TARGETS as MANUAL_TARGETS
from handshake_order.access import refuse_query_token, staff_actor
from handshake_order.bodies import CatalogueIn, EmptyBody, NoteIn, ReasonIn, RefundIn, TransitionIn
from handshake_order.changes import OrderChanges
from handshake_order.checkout import PRINTABLE, Checkout, CheckoutRequest, pricing_problem, quote
from handshake_order.commands import OrderCommands, locked_order, order_id_or_404, refused_problem
from handshake_order.domain import operations as ops
from handshake_order.domain import saga
from handshake_order.domain.pricing import PricingError
from handshake_order.domain.states import OrderState
from handshake_order.search import BadCursor, OrderSearch, search
from handshake_order.settings import OrderSettings
from handshake_shared.auth import principal_from_header, require_roles
from handshake_shared.db import Database
from handshake_shared.http import Problem, require_idempotency_key
from handshake_shared.outbox import Outbox
from handshake_shared.rate_limit import client_address

Authorization = Annotated[str | None, Header()]
OrderToken = Annotated[str | None, Header()]


@dataclass
class OrderContext:
    db: Database
    settings: OrderSettings
    checkout: Checkout
    outbox: Outbox
    http: httpx.AsyncClient | None = None
    scanner: Any = None
    changes: OrderChanges | None = None


# a long-poll waits this long unless asked for less; the most it may ask for stays below common proxy idle timeouts
DEFAULT_WAIT_SECONDS = 20.0
MAX_WAIT_SECONDS = 30.0


def build_router(ctx: OrderContext) -> APIRouter:
    router = APIRouter()
    commands = OrderCommands(ctx.db, ctx.outbox)
    command, keyed = commands.run, commands.keyed

    async def readable_order(
        order_id: str, authorization: str | None, token: str | None, *, with_timeline: bool = True
    ) -> Any:
        return await views.readable_order(
            ctx.db, ctx.settings, order_id, authorization, token, with_timeline=with_timeline
        )

    async def awaited_order(
        order_id: str, authorization: str | None, token: str | None, *, until: Callable[[Any], bool], timeout: float
    ) -> Any:
        assert ctx.changes is not None  # the app's listener, running while the app runs
        return await views.awaited_order(
            ctx.db, ctx.settings, ctx.changes, order_id, authorization, token, until=until, timeout=timeout
        )

    @router.get("/v1/products")
    async def list_products() -> dict[str, Any]:
        async with ctx.db.read() as conn:
            return {"products": await catalogue.active_products(conn)}

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
            order = await awaited_order(
                order_id,
                authorization,
                x_order_token,
                until=lambda order: order.version != wait_for_change,
                timeout=timeout,
            )
            events = None
            if timeline:
                order, events = await views.with_timeline(ctx.db, order.id)
        response.headers["ETag"] = f'"{order.version}"'
        return views.order_body(order, events)

    @router.get("/v1/orders/{order_id}/payment-session")
    async def payment_session(
        order_id: str,
        request: Request,
        response: Response,
        authorization: Authorization = None,
        x_order_token: OrderToken = None,
        timeout: Annotated[
            float | None,
            Query(
                gt=0,
                le=MAX_WAIT_SECONDS,
                description="seconds to wait while the order is still on its way to its payment session "
                "(answered when the session is there, the order can no longer get one by itself, or the "
                "time is up); without it, 409 at once when it is not ready",
            ),
        ] = None,
    ) -> dict[str, Any]:
        refuse_query_token(request)
        if timeout is None:
            order, _ = await readable_order(order_id, authorization, x_order_token, with_timeline=False)
        else:
            order = await awaited_order(
                order_id,
                authorization,
                x_order_token,
                until=lambda order: not saga.payment_session_coming(order.state, order.payment_intent_id),
                timeout=timeout,
            )
        response.headers["Cache-Control"] = "no-store"
        session = await payment_sessions.fetch(ctx.http, ctx.settings, order)
        await payment_sessions.open_hold(ctx.db, ctx.outbox, ctx.settings, order)
        return session

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
        return await views.staff_view(ctx.db, order_id)

    @router.post("/v1/admin/orders/{order_id}/refunds", status_code=202)
    async def request_refund(
        order_id: str,
        body: RefundIn,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        principal = require_roles(ctx.settings, authorization, "support", "finance")
        key = require_idempotency_key(idempotency_key)
        role = access.refund_role(principal)
        limit = ctx.settings.support_refund_limit
        access.refuse_above_support_limit(role, body.amount, limit, request_approval=body.request_approval)
        oid = order_id_or_404(order_id)
        if role == "support" and body.amount > limit:
            return await ask_for_approval(oid, body, principal.subject, key)
        refund_id = uuid.uuid4()

        async def record(conn: Any, decision: saga.Decision) -> dict[str, Any]:
            if role == "support":
                granted = await repo.support_refunded(conn, oid)
                access.check_support_total(granted, body.amount, limit, request_approval=body.request_approval)
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
        except access.NeedsApproval:
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
        roles = access.APPROVING_ROLES if approving else access.WITHDRAWING_ROLES
        principal = require_roles(ctx.settings, authorization, *roles)
        key = require_idempotency_key(idempotency_key)
        aid = repo.parse_order_id(approval_id)
        if aid is None:
            raise Problem(404, "Approval not found", type="approval-not-found")

        async def work(conn: Any) -> dict[str, Any]:
            return await approvals.settle(conn, ctx.outbox, aid, principal, approving=approving, reason=body.reason)

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
        oid = order_id_or_404(order_id)
        return await command(
            oid,
            lambda view: access.manual_transition(view, body.to, body.reason),
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
            return await catalogue.upsert(conn, body, actor=staff_actor(principal.subject))

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
        async with ctx.db.read() as conn:
            changes = await catalogue.history(conn, kind=kind, key=key, before_id=before_id, limit=limit)
        return {"changes": changes}

    return router
