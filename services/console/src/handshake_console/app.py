"""Composition root: settings, the HTTP client the console calls the issuer and the services with, pages."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from handshake_console.actions import ACTIONS, APPROVAL_DECISIONS, APPROVAL_ROLES, FormError
from handshake_console.backend import Answer, Backend, not_available
from handshake_console.dashboard import Dashboard
from handshake_console.domain.money import format_money
from handshake_console.domain.provider_events import outcome_of, processing_outcomes
from handshake_console.domain.search import classify
from handshake_console.domain.summary import summary_line
from handshake_console.oidc import LOGIN_MAX_AGE_SECONDS, OidcClient, SignInFailed
from handshake_console.scrape import PodScraper, Resolve, resolve_addresses
from handshake_console.session import IdempotencyKeys, Sealer, Session, csrf_matches, new_form_id
from handshake_console.settings import SERVICES, ConsoleSettings
from handshake_shared.events.order import OrderStateName
from handshake_shared.http import ops_router

log = structlog.get_logger("console")

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 16 * 1024
# the order states a search may filter by: the published contract's own list, so a new state shows here too
ORDER_STATES: tuple[str, ...] = get_args(OrderStateName)
# where a review may be closed to, and what a person may move an order to by hand (the service decides)
CLOSE_TARGETS = ("fulfillment_pending", "fulfilled", "cancelled_with_refund", "refunded", "closed")
MANUAL_TARGETS = ("needs_review", "cancelled", "fulfilled", "partially_fulfilled", "closed")


def security_headers(settings: ConsoleSettings) -> dict[str, str]:
    headers = {
        # no script at all: the pages are forms, links and inline SVG
        "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # order ids and e-mail addresses travel in console URLs: never to another site. Not "no-referrer": under
        # it a browser sends `Origin: null` with every form POST, and the origin check would refuse them all
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
        # pages hold personal data and money figures: not for shared caches or the back button of the next user
        "Cache-Control": "no-store",
    }
    if settings.secure_cookies:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


class Console:
    def __init__(
        self, settings: ConsoleSettings, http: httpx.AsyncClient, *, resolve: Resolve = resolve_addresses
    ) -> None:
        self.settings = settings
        self.http = http
        self.oidc = OidcClient(settings, http)
        self.backend = Backend(settings.service_urls(), http, timeout=settings.console_http_timeout_seconds)
        self.sessions = Sealer(settings.console_session_secrets, "session")
        self.logins = Sealer(settings.console_session_secrets, "sign-in")
        self.keys = IdempotencyKeys(settings.console_session_secrets)
        scrape = PodScraper(
            settings.metrics_urls(),
            http,
            resolve=resolve,
            max_pods=settings.console_metrics_max_pods,
            timeout=settings.console_metrics_pod_timeout_seconds,
        )
        self.dashboard = Dashboard(
            scrape,
            points=settings.console_metrics_points,
            interval_seconds=settings.console_metrics_interval_seconds,
            services=SERVICES,
        )
        prefix = "__Host-" if settings.secure_cookies else ""
        self.session_cookie = prefix + "hs_console"
        self.login_cookie = prefix + "hs_console_signin"
        self.templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
        self.templates.filters["money"] = format_money
        self.templates.globals["form_id"] = new_form_id

    # --- sessions -----------------------------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        value = self.sessions.open(
            request.cookies.get(self.session_cookie), self.settings.console_session_max_age_seconds
        )
        return Session.from_json(value) if value else None

    def set_cookie(
        self, response: Response, name: str, value: str, *, max_age: int, same_site: Literal["lax", "strict"]
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            secure=self.settings.secure_cookies,
            samesite=same_site,
        )

    def render(
        self, request: Request, name: str, *, status: int = 200, session: Session | None = None, **context: Any
    ) -> HTMLResponse:
        session = session or self.session_of(request)
        html = self.templates.get_template(name).render(request=request, session=session, actions=ACTIONS, **context)
        return HTMLResponse(html, status_code=status)

    def problem_page(self, request: Request, status: int, title: str, detail: str = "", **context: Any) -> HTMLResponse:
        return self.render(request, "problem.html", status=status, title=title, detail=detail, **context)

    async def form_of(self, request: Request) -> dict[str, str] | None:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return None
        try:
            parsed = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=50)
        except (UnicodeDecodeError, ValueError):
            return None
        return {k: v[0] for k, v in parsed.items()}

    def same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:  # browsers send it on every POST; a missing one is a non-browser client
            return True
        expected = urlsplit(self.settings.console_public_url)
        sent = urlsplit(origin)
        return (sent.scheme, sent.netloc) == (expected.scheme, expected.netloc)

    async def checked_post(self, request: Request) -> tuple[Session, dict[str, str]] | HTMLResponse:
        """Every POST: a signed-in session, a same-origin request and the session's CSRF token in the form;
        otherwise 403 (or a sign-in) and no service is called."""
        session = self.session_of(request)
        if session is None:
            return self.problem_page(request, 401, "Signed out", "your session has ended; sign in again")
        form = await self.form_of(request)
        if form is None:
            return self.problem_page(request, 400, "Unreadable form", "the form could not be read", session=session)
        if not self.same_origin(request) or not csrf_matches(session, form.get("csrf")):
            log.warning("form refused: CSRF token missing or wrong", subject=session.subject, path=request.url.path)
            return self.problem_page(
                request,
                403,
                "Form refused",
                "the form's security token is missing or does not belong to your session; "
                "reload the page and try again",
                session=session,
            )
        return session, form


def create_app(
    settings: ConsoleSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resolve: Resolve = resolve_addresses,
) -> FastAPI:
    http = httpx.AsyncClient(transport=transport, follow_redirects=False)
    console = Console(settings, http, resolve=resolve)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(console.dashboard.run(), name="console-dashboard")
        try:
            yield
        finally:
            console.dashboard.stop()
            await task
            await http.aclose()

    app = FastAPI(
        title="Handshake operations console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.console = console
    app.include_router(ops_router({}))
    headers = security_headers(settings)

    @app.middleware("http")
    async def secure(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Request refused")
        return console.problem_page(request, exc.status_code, title, str(exc.detail or ""))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return console.problem_page(request, 400, "Invalid request", "a parameter of this page is not valid")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # a bug of ours: logged in full, shown as a page that says what to do, never a bare 500
        log.exception("console page failed", path=request.url.path)
        return console.problem_page(
            request,
            503,
            "This page could not be shown",
            "something went wrong in the console; try again, and tell the on-call engineer if it keeps happening",
        )

    @app.get("/console.css")
    async def stylesheet() -> Response:
        return Response(
            (TEMPLATES / "console.css").read_text(),
            media_type="text/css",
            headers={"Cache-Control": "public, max-age=300"},
        )

    # --- sign-in ------------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        if console.session_of(request) is not None:
            return RedirectResponse("/search", status_code=303)
        return console.render(request, "signin.html", configured=console.oidc.configured)

    @app.get("/auth/login")
    async def login(request: Request) -> Response:
        if not console.oidc.configured:
            return console.problem_page(
                request,
                503,
                "Sign-in is not configured",
                "HANDSHAKE_CONSOLE_OIDC_ISSUER and HANDSHAKE_CONSOLE_OIDC_CLIENT_ID are not set",
            )
        try:
            url, login_state = await console.oidc.begin()
        except SignInFailed as exc:
            return console.problem_page(request, 503, "Sign-in is unavailable", str(exc))
        response = RedirectResponse(url, status_code=303)
        # Lax, not Strict: the issuer sends the browser back with a cross-site redirect, which must carry it
        console.set_cookie(
            response,
            console.login_cookie,
            console.logins.seal(login_state),
            max_age=LOGIN_MAX_AGE_SECONDS,
            same_site="lax",
        )
        return response

    @app.get("/auth/callback")
    async def callback(
        request: Request, code: str | None = None, state: str | None = None, error: str | None = None
    ) -> Response:
        if error:
            return console.problem_page(
                request, 401, "Sign-in refused", f"the identity provider answered {error[:100]!r}"
            )
        login_state = console.logins.open(request.cookies.get(console.login_cookie), LOGIN_MAX_AGE_SECONDS)
        try:
            identity = await console.oidc.finish(code=code, state=state, login=login_state)
        except SignInFailed as exc:
            log.warning("sign-in refused", reason=str(exc))
            response = console.problem_page(request, 401, "Sign-in refused", str(exc))
            response.delete_cookie(console.login_cookie, path="/")
            return response
        session = Session(
            subject=identity.subject,
            name=identity.name,
            roles=identity.roles,
            token=identity.access_token,
            expires_at=identity.expires_at,
        )
        log.info("staff signed in", subject=session.subject, roles=session.roles)
        # A page, not a redirect: the browser arrived here from the issuer's site, and a redirect in that same
        # navigation would not send the SameSite=Strict session cookie; the page's own navigation does.
        response = console.render(request, "signed_in.html", session=session)
        max_age = max(1, min(settings.console_session_max_age_seconds, identity.expires_at - int(time.time())))
        console.set_cookie(
            response,
            console.session_cookie,
            console.sessions.seal(session.to_json()),
            max_age=max_age,
            same_site="strict",
        )
        response.delete_cookie(console.login_cookie, path="/")
        return response

    @app.post("/auth/logout")
    async def logout(request: Request) -> Response:
        checked = await console.checked_post(request)
        if isinstance(checked, Response):
            return checked
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(
            console.session_cookie, path="/", secure=settings.secure_cookies, httponly=True, samesite="strict"
        )
        log.info("staff signed out", subject=checked[0].subject)
        return response

    def signed_in(request: Request) -> Session | Response:
        session = console.session_of(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        return session

    # --- search -------------------------------------------------------------------------------------------

    @app.get("/search", response_class=HTMLResponse)
    async def search(request: Request, q: str = "", stuck: str = "", before: str = "") -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        states = [s for s in request.query_params.getlist("state") if s in ORDER_STATES]
        query = classify(q[:254])
        stuck_minutes = int(stuck) if stuck.isdigit() and 0 < int(stuck) <= 525_600 else None
        context: dict[str, Any] = {
            "q": q[:254],
            "query": query,
            "states": states,
            "stuck": stuck_minutes,
            "all_states": ORDER_STATES,
            "answer": None,
            "orders": [],
            "next": None,
            "payments": [],
            "event": None,
        }
        token = session.token
        if query.kind == "order_id":
            # one order needs no search endpoint: open it
            return RedirectResponse(f"/orders/{query.value}", status_code=303)
        if query.kind == "payment_intent":
            answer = await console.backend.get(
                "payment", "/v1/admin/payments", token, params={"provider_intent_id": query.value}
            )
            context["answer"] = answer
            payments = (answer.data or {}).get("payments", []) if answer.ok else []
            context["payments"] = payments
            order_ids = {p.get("order_id") for p in payments if p.get("order_id")}
            if len(order_ids) == 1:
                return RedirectResponse(f"/orders/{order_ids.pop()}", status_code=303)
            if not answer.ok:
                # older payment services: the order search also knows the current attempt's intent
                fallback = await _order_search(
                    console, token, {"payment_intent_id": query.value}, states, stuck_minutes, before
                )
                context.update(answer=fallback[0], orders=fallback[1], next=fallback[2])
        elif query.kind == "provider_event":
            answer = await console.backend.get("webhook-ingest", f"/v1/admin/provider-events/{query.value}", token)
            context["answer"] = answer
            if answer.ok and isinstance(answer.data, dict):
                context["event"] = answer.data
                if answer.data.get("order_id"):
                    return RedirectResponse(f"/orders/{answer.data['order_id']}", status_code=303)
        elif query.kind != "empty" or states or stuck_minutes:
            filters = (
                {"reference": query.value}
                if query.kind == "reference"
                else {"email": query.value}
                if query.kind == "email"
                else {"customer_id": query.value}
                if query.kind == "customer_id"
                else {}
            )
            found = await _order_search(console, token, filters, states, stuck_minutes, before)
            context.update(answer=found[0], orders=found[1], next=found[2])
            if query.kind == "reference" and len(found[1]) == 1 and not before:
                return RedirectResponse(f"/orders/{found[1][0]['id']}", status_code=303)
        return console.render(request, "search.html", session=session, **context)

    # --- one order ----------------------------------------------------------------------------------------

    @app.get("/orders/{order_id}", response_class=HTMLResponse)
    async def order_page(request: Request, order_id: str) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        oid = _uuid(order_id)
        if oid is None:
            return console.problem_page(
                request, 404, "Not an order id", "order ids are UUIDs; use the search box", session=session
            )
        panels = await _order_panels(console, session.token, oid)
        order = panels["order"]
        status = 200 if order.ok else (order.status if order.problem and 400 <= order.status < 500 else 502)
        summary = summary_line(order.data) if order.ok else None
        return console.render(
            request,
            "order.html",
            status=status,
            session=session,
            oid=oid,
            panels=panels,
            order=order.data if order.ok else None,
            summary=summary,
            close_targets=CLOSE_TARGETS,
            manual_targets=MANUAL_TARGETS,
        )

    @app.post("/orders/{order_id}/actions/{action_name}", response_class=HTMLResponse)
    async def order_action(request: Request, order_id: str, action_name: str) -> Response:
        checked = await console.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        action = ACTIONS.get(action_name)
        oid = _uuid(order_id)
        if action is None or oid is None:
            return console.problem_page(request, 404, "No such action", session=session)
        form_id = form.get("form_id") or ""
        if not 8 <= len(form_id) <= 64:
            return console.problem_page(
                request, 400, "Form incomplete", "reload the order and submit the form again", session=session
            )
        event_id = (form.get("event_id") or "").strip()
        if "{event_id}" in action.path and not (
            event_id.startswith("evt_") and len(event_id) <= 255 and event_id.replace("_", "").isalnum()
        ):
            return console.problem_page(request, 400, "Choose a provider event", session=session)
        service, dead_letter_id = action.service, (form.get("dead_letter_id") or "").strip()
        if "{dead_letter_id}" in action.path:
            service = (form.get("service") or "").strip()
            if service not in SERVICES or not (dead_letter_id.isdigit() and 0 < int(dead_letter_id) < 2**63):
                return console.problem_page(request, 400, "Choose a dead letter", session=session)
        currency = None
        if action.name in ("refund", "request_approval"):
            # the amount is typed in the order's currency; ask the order service which that is
            current = await console.backend.get("order", f"/v1/admin/orders/{oid}", session.token)
            if not current.ok:
                return _result(console, request, session, action.label, current, oid)
            currency = current.data.get("currency")
        try:
            body = action.build(form, currency)
        except FormError as exc:
            return console.problem_page(
                request, 422, "Check the form", str(exc), session=session, back=f"/orders/{oid}"
            )
        key = console.keys.derive(session, action.name, f"{oid}/{event_id}/{service}/{dead_letter_id}", form_id)
        path = action.path.format(order_id=oid, event_id=event_id, dead_letter_id=dead_letter_id)
        log.info("staff action", subject=session.subject, action=action.name, order_id=oid, idempotency_key=key)
        answer = await console.backend.post(service, path, session.token, body, idempotency_key=key)
        return _result(console, request, session, action.label, answer, oid)

    # --- approvals ----------------------------------------------------------------------------------------

    @app.get("/approvals", response_class=HTMLResponse)
    async def approvals(request: Request, state: str = "pending") -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        state = state if state in ("pending", "approved", "rejected") else "pending"
        answer = await console.backend.get(
            "order", "/v1/admin/refund-approvals", session.token, params={"state": state}
        )
        items = _items(answer.data, "refund_approvals", "approvals", "items") if answer.ok else []
        return console.render(
            request,
            "approvals.html",
            session=session,
            answer=answer,
            items=items,
            state=state,
            can_decide=session.has_role(*APPROVAL_ROLES),
        )

    @app.post("/approvals/{approval_id}/{decision}", response_class=HTMLResponse)
    async def decide(request: Request, approval_id: str, decision: str) -> Response:
        checked = await console.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        aid = _uuid(approval_id)
        form_id = form.get("form_id") or ""
        if decision not in APPROVAL_DECISIONS or aid is None or not 8 <= len(form_id) <= 64:
            return console.problem_page(request, 404, "No such decision", session=session)
        reason = (form.get("reason") or "").strip()
        if not 3 <= len(reason) <= 500:
            return console.problem_page(
                request,
                422,
                "Check the form",
                "the reason must have 3 to 500 characters",
                session=session,
                back="/approvals",
            )
        key = console.keys.derive(session, decision, aid, form_id)
        answer = await console.backend.post(
            "order",
            f"/v1/admin/refund-approvals/{aid}/{decision}",
            session.token,
            {"reason": reason},
            idempotency_key=key,
        )
        return _result(console, request, session, f"Refund approval: {decision}", answer, None, back="/approvals")

    # --- dashboard ----------------------------------------------------------------------------------------

    @app.get("/dashboard", response_class=HTMLResponse)
    async def dashboard(request: Request) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        board = console.dashboard
        return console.render(
            request,
            "dashboard.html",
            session=session,
            figures=board.view(),
            errors=board.last_error,
            pods=board.pods,
            last_scrape=board.last_scrape,
            interval=settings.console_metrics_interval_seconds,
        )

    return app


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _items(data: Any, *keys: str) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        for key in keys:
            if isinstance(data.get(key), list):
                return [i for i in data[key] if isinstance(i, dict)]
    return []


async def _order_search(
    console: Console, token: str, filters: dict[str, str], states: list[str], stuck: int | None, before: str
) -> tuple[Answer, list[dict[str, Any]], str | None]:
    params: list[tuple[str, str]] = list(filters.items()) + [("state", s) for s in states]
    if stuck:
        params.append(("stuck_older_than_minutes", str(stuck)))
    if before:
        params.append(("before", before[:200]))
    params.append(("limit", "50"))
    answer = await console.backend.get("order", "/v1/admin/orders", token, params=params)
    if not answer.ok:
        return answer, [], None
    orders = _items(answer.data, "orders")
    nxt = answer.data.get("next") if isinstance(answer.data, dict) else None
    return (
        answer,
        orders,
        (urlencode([p for p in params if p[0] not in ("before", "limit")] + [("before", nxt)]) if nxt else None),
    )


async def _order_panels(console: Console, token: str, oid: str) -> dict[str, Any]:
    b = console.backend
    calls = {
        "order": b.get("order", f"/v1/admin/orders/{oid}", token),
        "payments": b.get("payment", f"/v1/admin/orders/{oid}/payments", token, params={"live": "true"}),
        "webhooks": b.get("webhook-ingest", "/v1/admin/provider-events", token, params={"order_id": oid}),
        "reservation": b.get("inventory", f"/v1/admin/reservations/{oid}", token),
        "reconciliation": b.get("payment", "/v1/admin/reconciliation-runs", token, params={"order_id": oid}),
        "events": b.get("order", f"/v1/admin/orders/{oid}/events", token),
        **{
            f"dead_letters:{s}": b.get(s, "/v1/admin/dead-letters", token, params={"order_id": oid, "status": "all"})
            for s in SERVICES
        },
    }
    answers = dict(zip(calls, await asyncio.gather(*calls.values()), strict=True))
    panels: dict[str, Any] = {k: v for k, v in answers.items() if not k.startswith("dead_letters:")}

    webhooks, payments = panels["webhooks"], panels["payments"]
    if webhooks.ok and payments.ok and isinstance(webhooks.data, dict):
        outcomes = processing_outcomes(_items(payments.data, "attempts"))
        events = [dict(e, outcome=outcome_of(e, outcomes)) for e in _items(webhooks.data, "provider_events")]
        panels["webhooks"] = Answer(status=webhooks.status, data={**webhooks.data, "provider_events": events})

    runs = panels["reconciliation"]
    if runs.ok:
        listed = _items(runs.data, "runs")
        # a service that ignores the order filter lists every run: only runs that name this order count
        if listed and not any("order_id" in r for r in listed):
            panels["reconciliation"] = not_available(
                "not available: the payment service does not list runs per order yet"
            )
        else:
            panels["reconciliation"] = Answer(
                status=runs.status, data=[r for r in listed if str(r.get("order_id")) == oid]
            )

    letters: list[dict[str, Any]] = []
    notes: list[str] = []
    for service in SERVICES:
        answer = answers[f"dead_letters:{service}"]
        if answer.ok:
            # the key of a saga message is the order id: filter here too, whatever the service did with order_id
            letters += [
                dict(item, service=service)
                for item in _items(answer.data, "items")
                if str(item.get("key")) == oid or str(item.get("order_id")) == oid
            ]
        else:
            notes.append(f"{service}: {answer.message}")
    panels["dead_letters"] = (letters, notes)
    return panels


def _result(
    console: Console,
    request: Request,
    session: Session,
    label: str,
    answer: Answer,
    oid: str | None,
    *,
    back: str | None = None,
) -> HTMLResponse:
    if answer.ok:
        status = 200
    elif answer.problem is not None:
        status = answer.status if 400 <= answer.status < 600 else 502
    else:
        status = 503
    return console.render(
        request,
        "result.html",
        status=status,
        session=session,
        label=label,
        answer=answer,
        back=back or (f"/orders/{oid}" if oid else "/search"),
    )
