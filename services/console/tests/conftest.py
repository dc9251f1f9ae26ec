"""The console in-process against the development identity provider and a stand-in order service, all over
ASGI: no port, no process, no database. The stand-in checks bearer tokens with the services' own
`require_roles`, so a role the console shows as missing is refused by the same rule the real service uses."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Header, Request
from pydantic import SecretStr

from handshake_console.app import Console, create_app
from handshake_console.scrape import Resolve
from handshake_console.settings import ConsoleSettings
from handshake_devstack.identity import create_identity_app
from handshake_devstack.tokens import DEV_ISSUER
from handshake_shared.auth import require_roles
from handshake_shared.http import Problem, install_problem_handlers
from handshake_shared.settings import ServiceSettings

CONSOLE = "https://console.test"
ISSUER = "http://idp.test"
CLIENT_ID = "handshake-console"
ORDER_ID = "0b0e5f8e-4c1a-4d55-9a53-2b7c1f0a9d11"
APPROVAL_ID = "6f1d2c3b-0a9e-4d8c-b7a6-5e4f3d2c1b0a"


@dataclass
class Recorded:
    calls: list[dict[str, Any]] = field(default_factory=list)

    def posts(self) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["method"] == "POST"]


def order_body() -> dict[str, Any]:
    return {
        "order_id": ORDER_ID,
        "reference": "HS-0B0E5F8E",
        "state": "fulfillment_pending",
        "version": 7,
        "total": 5743,
        "currency": "EUR",
        "payment_intent_id": "pi_123",
        "customer_id": "cus_1",
        "email": "kim@example.com",
        "captured_amount": 5743,
        "refunded_amount": 0,
        "refund_pending_amount": 0,
        "stock_committed": True,
        "created_at": "2026-12-01T10:00:00+00:00",
        "updated_at": "2026-12-01T10:00:05+00:00",
        "snapshot": {
            "currency": "EUR",
            "lines": [{"sku": "HS-MUG", "name": "Mug", "unit_price": 1250, "quantity": 2, "line_total": 2500}],
            "subtotal": 2500,
            "coupon_code": None,
            "discount": 0,
            "region": "DE",
            "tax_rate_bp": 1900,
            "tax": 475,
            "shipping_method": "standard",
            "shipping": 495,
            "total": 5743,
        },
        "timeline": [
            {
                "from": None,
                "to": "draft",
                "reason": "checkout",
                "actor": "customer",
                "event_id": None,
                "at": "2026-12-01T10:00:00+00:00",
            }
        ],
        "notes": [],
        "refunds": [],
    }


def stand_in_order_service(recorded: Recorded) -> FastAPI:
    settings = ServiceSettings(environment="test", jwt_public_key=DEV_ISSUER.public_pem)
    app = FastAPI()
    install_problem_handlers(app)

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        recorded.calls.append(
            {
                "method": request.method,
                "path": request.url.path,
                "authorization": request.headers.get("authorization"),
                "idempotency_key": request.headers.get("idempotency-key"),
                "body": (await request.body()).decode(),
            }
        )
        return await call_next(request)

    @app.get("/v1/admin/orders/{order_id}")
    async def get_order(order_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        require_roles(settings, authorization, "support", "finance", "admin")
        if order_id != ORDER_ID:
            raise Problem(404, "Order not found", type="order-not-found")
        return order_body()

    @app.get("/v1/admin/orders")
    async def search(reference: str | None = None, authorization: str | None = Header(None)) -> dict[str, Any]:
        require_roles(settings, authorization, "support", "finance", "admin")
        body = order_body()
        row = {
            k: body[k]
            for k in (
                "reference",
                "state",
                "total",
                "currency",
                "customer_id",
                "email",
                "created_at",
                "updated_at",
                "captured_amount",
                "refunded_amount",
                "payment_intent_id",
            )
        }
        rows = [{"id": ORDER_ID, **row}] if reference in (None, "HS-0B0E5F8E") else []
        return {"orders": rows, "next": None}

    @app.post("/v1/admin/orders/{order_id}/review/close")
    async def close_review(order_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        require_roles(settings, authorization, "finance", "admin")
        return {"order_id": order_id, "state": "closed"}

    @app.post("/v1/admin/orders/{order_id}/review")
    async def review(order_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        principal = require_roles(settings, authorization, "support", "finance", "admin")
        return {"order_id": order_id, "state": "needs_review", "by": principal.subject}

    @app.get("/v1/admin/refund-approvals")
    async def approvals(authorization: str | None = Header(None)) -> dict[str, Any]:
        require_roles(settings, authorization, "support", "finance", "admin")
        pending = {
            "approval_id": APPROVAL_ID,
            "order_id": ORDER_ID,
            "amount": 11000,
            "currency": "EUR",
            "reason": "parcel lost",
            "restock": False,
            "state": "pending",
            "requested_by": "sam",
            "requested_at": "2026-12-01T10:05:00+00:00",
        }
        return {"approvals": [pending], "next": None}

    @app.post("/v1/admin/refund-approvals/{approval_id}/reject")
    async def reject(approval_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        principal = require_roles(settings, authorization, "support", "finance", "admin")
        return {"approval_id": approval_id, "state": "rejected", "decided_by": principal.subject}

    @app.get("/v1/admin/dead-letters")
    async def dead_letters(order_id: str | None = None, authorization: str | None = Header(None)) -> dict[str, Any]:
        require_roles(settings, authorization, "support", "finance", "admin")
        letter = {
            "id": 41,
            "consumer": "order-saga",
            "key": ORDER_ID,
            "event_type": "inventory.committed",
            "error": "stock fact could not be written",
            "resolved_at": None,
        }
        return {"items": [letter] if order_id == ORDER_ID else []}

    @app.post("/v1/admin/dead-letters/{dead_letter_id}/redrive")
    async def redrive_dead_letter(dead_letter_id: int, authorization: str | None = Header(None)) -> dict[str, Any]:
        principal = require_roles(settings, authorization, "support", "finance", "admin")
        return {"id": dead_letter_id, "outcome": "applied", "redriven_by": principal.subject}

    @app.post("/v1/admin/orders/{order_id}/refunds", status_code=202)
    async def refund(order_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        require_roles(settings, authorization, "support", "finance")
        return {"refund_id": str(uuid.uuid4()), "refund_state": "requested"}

    return app


class Router(httpx.AsyncBaseTransport):
    """Sends each request to the in-process app of its host; a host without an app cannot be reached."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.transports = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transports.get(request.url.host)
        if transport is None:
            raise httpx.ConnectError(f"no route to {request.url.host}", request=request)
        return await transport.handle_async_request(request)


def console_settings(**overrides: Any) -> ConsoleSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "console_public_url": CONSOLE,
        "console_session_secrets": [SecretStr("s" * 40)],
        "console_oidc_issuer": ISSUER,
        "console_oidc_client_id": CLIENT_ID,
        "console_order_url": "http://order.test",
        # answers nothing the console asks for: every payment panel is "not offered yet"
        "console_payment_url": "http://payment.test",
        # unreachable
        "console_inventory_url": "http://inventory.test",
        "console_webhook_ingest_url": None,
    }
    return ConsoleSettings(**{**values, **overrides})


@dataclass
class Harness:
    browser: httpx.AsyncClient
    idp: httpx.AsyncClient
    recorded: Recorded
    console: Console

    # tests reach the set-up through the fixture (test modules do not import conftest)
    CONSOLE = CONSOLE
    ISSUER = ISSUER
    CLIENT_ID = CLIENT_ID
    ORDER_ID = ORDER_ID
    settings = staticmethod(console_settings)
    query_of = staticmethod(lambda url: query_of(url))

    async def start_login(self) -> str:
        """The issuer's authorize URL the console sends the browser to."""
        response = await self.browser.get("/auth/login")
        assert response.status_code == 303
        return response.headers["location"]

    async def authorize(self, authorize_url: str, user: str) -> str:
        """The user picks themselves on the issuer's page; the callback URL the issuer sends the browser to."""
        response = await self.idp.get(authorize_url + "&user=" + user)
        assert response.status_code == 303, response.text
        return response.headers["location"]

    async def sign_in(self, user: str) -> httpx.Response:
        callback = await self.authorize(await self.start_login(), user)
        return await self.browser.get(callback)

    async def page(self, path: str) -> httpx.Response:
        return await self.browser.get(path)

    async def form_fields(self, path: str, action: str) -> dict[str, str]:
        """The hidden fields of the form posting to `action` on the page at `path`, as rendered."""
        html = (await self.page(path)).text
        form = re.search(r'<form[^>]*action="' + re.escape(action) + r'"[^>]*>(.*?)</form>', html, re.S)
        assert form, f"no form posting to {action}"
        return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(1)))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@asynccontextmanager
async def open_harness(
    *, hosts: dict[str, FastAPI] | None = None, resolve: Resolve | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    """The console with more hosts to route to (a service's pods by address, say), the resolver it finds pods
    with, and settings changed. Its dashboard does not scrape on its own (no lifespan over ASGI): a test calls
    `harness.console.dashboard.scrape_once()`."""
    recorded = Recorded()
    identity = create_identity_app(ISSUER, {CLIENT_ID: [CONSOLE + "/auth/callback"]})
    router = Router(
        {
            "idp.test": identity,
            "order.test": stand_in_order_service(recorded),
            "payment.test": FastAPI(),
            **(hosts or {}),
        }
    )
    app = create_app(console_settings(**overrides), transport=router, **({"resolve": resolve} if resolve else {}))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=CONSOLE) as browser,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=identity), base_url=ISSUER) as idp,
    ):
        yield Harness(browser, idp, recorded, app.state.console)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with open_harness() as opened:
        yield opened


@pytest.fixture
def console_with() -> Callable[..., AbstractAsyncContextManager[Harness]]:
    """`async with console_with(hosts=..., resolve=..., **settings) as harness:` (open_harness)."""
    return open_harness
