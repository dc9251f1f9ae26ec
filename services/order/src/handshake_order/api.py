"""HTTP routes of the order service (thin: parse, call one thing, answer)."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from handshake_order import repository as repo
from handshake_order.checkout import Checkout, CheckoutRequest, pricing_problem, quote, token_hash
from handshake_order.db import coupons, products, shipping_rates, tax_rates
from handshake_order.domain.pricing import PricingError
from handshake_order.settings import OrderSettings
from handshake_shared.auth import principal_from_header, require_roles
from handshake_shared.db import Database
from handshake_shared.http import Problem

Authorization = Annotated[str | None, Header()]


@dataclass
class OrderContext:
    db: Database
    settings: OrderSettings
    checkout: Checkout
    http: httpx.AsyncClient | None = None


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=64)
    name: str
    unit_price: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    active: bool = True


class CouponIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    kind: str = Field(pattern="^(percent|fixed)$")
    percent_bp: int | None = Field(default=None, gt=0, le=10_000)
    amount_off: int | None = Field(default=None, gt=0)
    currency: str | None = None
    max_redemptions: int | None = Field(default=None, ge=1)
    expires_at: datetime | None = None
    active: bool = True


class TaxRateIn(BaseModel):
    region: str
    rate_bp: int = Field(ge=0, le=10_000)


class ShippingRateIn(BaseModel):
    code: str
    amount: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


class CatalogueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3)
    products: list[ProductIn] = []
    coupons: list[CouponIn] = []
    tax_rates: list[TaxRateIn] = []
    shipping_rates: list[ShippingRateIn] = []


def build_router(ctx: OrderContext) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/products")
    async def list_products() -> dict[str, Any]:
        async with ctx.db.engine.connect() as conn:
            rows = (await conn.execute(select(products).where(products.c.active).order_by(products.c.sku))).all()
        return {"products": [dict(r._mapping) for r in rows]}

    @router.post("/v1/quotes")
    async def create_quote(req: CheckoutRequest) -> dict[str, Any]:
        async with ctx.db.engine.connect() as conn:
            try:
                snapshot = await quote(conn, req)
            except PricingError as err:
                raise pricing_problem(err) from None
        return snapshot.model_dump(mode="json")

    @router.post("/v1/checkout", status_code=202)
    async def checkout(
        req: CheckoutRequest,
        authorization: Authorization = None,
        idempotency_key: Annotated[str | None, Header()] = None,
        traceparent: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        if not idempotency_key or len(idempotency_key) > 255:
            raise Problem(
                400, "Idempotency-Key required", "send a unique Idempotency-Key header (at most 255 characters) per checkout",
                type="idempotency-key-required",
            )  # fmt: skip
        principal = principal_from_header(ctx.settings, authorization)
        status, body, replayed = await ctx.checkout.place(principal, idempotency_key, req, traceparent)
        headers = {"Location": body["links"]["self"]}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(body, status_code=status, headers=headers)

    async def readable_order(order_id: str, authorization: str | None, token: str | None) -> Any:
        """Owner or lookup-token holder only; anyone else gets the same 404 as for a missing order."""
        try:
            oid = uuid.UUID(order_id)
        except ValueError:
            raise Problem(404, "Order not found", type="order-not-found") from None
        principal = principal_from_header(ctx.settings, authorization)
        async with ctx.db.engine.connect() as conn:
            order = await repo.get_order(conn, oid)
            allowed = order is not None and (
                (principal is not None and order.customer_id == principal.subject)
                or (principal is not None and principal.has_role("support", "finance", "admin"))
                or (
                    token is not None
                    and order.lookup_token_hash is not None
                    and hmac.compare_digest(order.lookup_token_hash, token_hash(token))
                )
            )
            if not allowed:
                raise Problem(404, "Order not found", type="order-not-found")
            events = await repo.timeline(conn, oid)
        return order, events

    @router.get("/v1/orders/{order_id}")
    async def get_order(
        order_id: str,
        authorization: Authorization = None,
        x_order_token: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        order, events = await readable_order(order_id, authorization, x_order_token or token)
        return {
            "order_id": str(order.id),
            "state": order.state,
            "total": order.total,
            "currency": order.currency,
            "snapshot": order.snapshot,
            "payment_intent_id": order.payment_intent_id,
            "created_at": order.created_at.isoformat(),
            "updated_at": order.updated_at.isoformat(),
            "timeline": events,
        }

    @router.get("/v1/orders/{order_id}/payment-session")
    async def payment_session(
        order_id: str,
        response: Response,
        authorization: Authorization = None,
        x_order_token: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        order, _ = await readable_order(order_id, authorization, x_order_token or token)
        response.headers["Cache-Control"] = "no-store"
        assert ctx.http is not None
        try:
            upstream = await ctx.http.get(
                f"{ctx.settings.payment_internal_url}/internal/v1/orders/{order.id}/payment-session",
                headers={"Authorization": "Bearer " + ctx.settings.internal_token.get_secret_value()},
                timeout=5.0,
            )
        except httpx.HTTPError:
            raise Problem(503, "Payment service unavailable", "try again shortly", type="payment-unavailable") from None
        if upstream.status_code == 404:
            raise Problem(
                409, "Payment not ready", f"the order is {order.state}; the payment session is not created yet",
                type="payment-not-ready", retry_after_seconds=1,
            )  # fmt: skip
        if upstream.status_code != 200:
            raise Problem(503, "Payment service unavailable", "try again shortly", type="payment-unavailable")
        # the client secret is passed through, never logged or stored here
        return upstream.json()

    @router.get("/v1/admin/orders/{order_id}")
    async def admin_get_order(order_id: str, authorization: Authorization = None) -> dict[str, Any]:
        require_roles(ctx.settings, authorization, "support", "finance", "admin")
        return await get_order(order_id, authorization=authorization, x_order_token=None, token=None)

    @router.put("/v1/admin/catalogue")
    async def upsert_catalogue(body: CatalogueIn, authorization: Authorization = None) -> dict[str, int]:
        require_roles(ctx.settings, authorization, "admin")
        async with ctx.db.transaction() as conn:
            for table, items, key in (
                (products, body.products, "sku"),
                (coupons, body.coupons, "code"),
                (tax_rates, body.tax_rates, "region"),
                (shipping_rates, body.shipping_rates, "code"),
            ):
                for item in items:
                    values = item.model_dump()
                    if "currency" in values and values["currency"]:
                        values["currency"] = values["currency"].upper()
                    stmt = pg_insert(table).values(**values)
                    await conn.execute(
                        stmt.on_conflict_do_update(
                            index_elements=[key], set_={k: stmt.excluded[k] for k in values if k != key}
                        )
                    )
        return {
            "products": len(body.products),
            "coupons": len(body.coupons),
            "tax_rates": len(body.tax_rates),
            "shipping_rates": len(body.shipping_rates),
        }

    return router
