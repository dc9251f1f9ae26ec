"""Quotes and the idempotent checkout: price on the server, store the snapshot, emit order.placed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order import idempotency as idem
from handshake_order import repository as repo
from handshake_order.db import coupon_redemptions, coupons, orders, products, shipping_rates, tax_rates
from handshake_order.domain.holds import HOLDING_STATES, Hold, wait_before_holding
from handshake_order.domain.operations import MAX_EMAIL_LENGTH, normalize_email, reference_of
from handshake_order.domain.pricing import (
    MAX_LINE_QUANTITY,
    Coupon,
    PriceSnapshot,
    PricingError,
    Product,
    RequestedLine,
    price,
)
from handshake_order.domain.states import OrderState
from handshake_order.metrics import CHECKOUTS
from handshake_order.settings import OrderSettings
from handshake_shared.auth import Principal
from handshake_shared.db import Database
from handshake_shared.events.base import Line
from handshake_shared.events.order import OrderPlaced
from handshake_shared.http import Problem
from handshake_shared.locks import AdvisoryLock, lock_for_transaction
from handshake_shared.outbox import Outbox

# Text a request may carry: no control characters. PostgreSQL cannot store NUL in text at all, and the
# others end up in audit rows, logs and events. Lengths below are those of the columns the text goes to.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    quantity: int = Field(ge=1, le=MAX_LINE_QUANTITY)


class CheckoutRequest(BaseModel):
    """Extra fields are refused, so a client can never send a price or a total."""

    model_config = ConfigDict(extra="forbid")

    lines: list[LineIn] = Field(min_length=1, max_length=100)
    region: str = Field(min_length=2, max_length=16, pattern=PRINTABLE)
    shipping_method: str = Field(min_length=1, max_length=32, pattern=PRINTABLE)
    coupon_code: str | None = Field(default=None, max_length=64, pattern=PRINTABLE)
    email: str | None = Field(
        default=None,
        max_length=MAX_EMAIL_LENGTH,
        pattern=PRINTABLE,
        description="where the customer can be reached; stored lowercased, never published",
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else normalize_email(value)

    def fingerprint(self) -> str:
        # a checkout without an email hashes as it did before the field existed, so a retry across the
        # release that added it is still answered from its stored checkout
        return idem.fingerprint(
            "checkout", self.model_dump(mode="json", exclude={"email"} if self.email is None else None)
        )


async def quote(conn: AsyncConnection, req: CheckoutRequest, *, max_units: int) -> PriceSnapshot:
    skus = {line.sku for line in req.lines}
    catalogue = {
        r.sku: Product(r.sku, r.name, r.unit_price, r.currency, r.active)
        for r in (await conn.execute(select(products).where(products.c.sku.in_(skus)))).all()
    }
    rate = (await conn.execute(select(tax_rates.c.rate_bp).where(tax_rates.c.region == req.region))).scalar()
    ship = (
        await conn.execute(
            select(shipping_rates.c.amount, shipping_rates.c.currency).where(
                shipping_rates.c.code == req.shipping_method
            )
        )
    ).first()
    coupon = None
    if req.coupon_code:
        row = (await conn.execute(select(coupons).where(coupons.c.code == req.coupon_code))).first()
        if row is None:
            raise PricingError("unknown-coupon", f"coupon {req.coupon_code} does not exist")
        coupon = Coupon(
            code=row.code,
            kind=row.kind,
            percent_bp=row.percent_bp,
            amount_off=row.amount_off,
            currency=row.currency,
            max_redemptions=row.max_redemptions,
            redemptions=row.redemptions,
            expires_at=row.expires_at,
            active=row.active,
        )
    return price(
        [RequestedLine(line.sku, line.quantity) for line in req.lines],
        catalogue,
        region=req.region,
        tax_rate_bp=rate,
        shipping_method=req.shipping_method,
        shipping_amount=(ship.amount, ship.currency) if ship else None,
        coupon=coupon,
        now=datetime.now(UTC),
        max_units=max_units,
    )


def pricing_problem(err: PricingError) -> Problem:
    return Problem(422, "Cannot price this order", err.detail, type=err.code)


def lookup_token(settings: OrderSettings, order_id: uuid.UUID) -> str:
    # derived, never stored (not even in a stored idempotent answer): a replay to the same browser
    # derives it again; only its hash is kept, on the order
    mac = hmac.new(settings.lookup_token_key.get_secret_value().encode(), order_id.bytes, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# a secret the browser generated (or was given) once and sends with every guest checkout: at least 128 bits,
# base64url or hex. Only its SHA-256 is kept, as the idempotency scope, so only that browser can be
# answered from a stored guest checkout.
GUEST_SESSION = re.compile(r"^[A-Za-z0-9_-]{22,128}$")


def guest_scope(guest_session: str | None) -> str:
    if guest_session is None or not GUEST_SESSION.fullmatch(guest_session):
        raise Problem(
            400,
            "Guest-Session required",
            "a checkout without an account sends a Guest-Session header: a random secret of at least 128 bits "
            "(22-128 characters of base64url or hex) that this browser keeps and sends again on a retry",
            type="guest-session-required",
        )
    return "guest:" + hashlib.sha256(guest_session.encode()).hexdigest()


def holder_of(settings: OrderSettings, principal: Principal | None, address: str) -> str:
    """Whose units an order holds: the signed-in customer, or a guest's client address under a keyed hash (an
    address is personal data; the hash is enough to count by and cannot be reversed without the key)."""
    if principal is not None:
        return f"customer:{principal.subject}"
    key = hmac.new(settings.lookup_token_key.get_secret_value().encode(), b"held-units holder", hashlib.sha256).digest()
    return "guest-address:" + hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


async def refuse_past_held_units_cap(conn: AsyncConnection, settings: OrderSettings, holder: str, units: int) -> None:
    """429 with Retry-After when this holder's unpaid orders already hold too much stock for `units` more.
    Nothing is held by the refused checkout: the transaction rolls back."""
    await lock_for_transaction(conn, AdvisoryLock.ORDER_HOLDER, holder)  # one holder's checkouts take turns
    rows = (
        await conn.execute(
            select(orders.c.units, orders.c.created_at, orders.c.hold_seconds, orders.c.payment_session_opened).where(
                orders.c.holder == holder, orders.c.state.in_([str(s) for s in HOLDING_STATES])
            )
        )
    ).all()
    wait = wait_before_holding(
        [Hold(r.units, r.created_at, r.hold_seconds, r.payment_session_opened) for r in rows],
        units,
        cap=settings.max_units_held_per_holder,
        full_hold_seconds=settings.checkout_hold_seconds,
        now=(await conn.execute(select(func.now()))).scalar_one(),
    )
    if wait is not None:
        raise Problem(
            429,
            "Too much stock held",
            f"your unpaid orders already hold stock; at most {settings.max_units_held_per_holder} units can be "
            "held at once. Pay or cancel an open order, or try again later",
            type="held-units-exhausted",
            retry_after_seconds=wait,
        )


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


class Checkout:
    def __init__(self, db: Database, outbox: Outbox, settings: OrderSettings) -> None:
        self.db = db
        self.outbox = outbox
        self.settings = settings

    async def place(
        self,
        principal: Principal | None,
        idempotency_key: str,
        req: CheckoutRequest,
        traceparent: str | None,
        guest_session: str | None = None,
        client_address: str = "unknown",
    ) -> tuple[int, dict[str, Any], bool]:
        """Returns (status, body, replayed). The idempotency claim, the held-units check, the order, its audit
        row, the coupon redemption and order.placed commit in one transaction (see idempotency.py). A guest's
        key is scoped by its Guest-Session secret: another browser sending the same key and body gets an order
        of its own. A guest's order holds its stock briefly until the payment session is opened."""
        scope = f"customer:{principal.subject}" if principal else guest_scope(guest_session)
        request_hash = req.fingerprint()
        async with self.db.transaction() as conn:
            stored = await idem.claim(
                conn, scope=scope, key=idempotency_key, request_hash=request_hash, command="checkout"
            )
            if stored is not None:
                status, body = stored
                if principal is None and status == 202:
                    # only the browser holding the session secret reaches this scope
                    body = {**body, "lookup_token": lookup_token(self.settings, uuid.UUID(body["order_id"]))}
                return status, body, True
            try:
                snapshot = await quote(conn, req, max_units=self.settings.max_units_per_order)
            except PricingError as err:
                raise pricing_problem(err) from None
            units = sum(line.quantity for line in snapshot.lines)
            holder = holder_of(self.settings, principal, client_address)
            if self.settings.rate_limits_enabled:
                await refuse_past_held_units_cap(conn, self.settings, holder, units)
            hold_seconds = self.settings.guest_hold_seconds if principal is None else None
            order_id = uuid.uuid4()
            token = lookup_token(self.settings, order_id) if principal is None else None
            await conn.execute(
                insert(orders).values(
                    id=order_id,
                    customer_id=principal.subject if principal else None,
                    lookup_token_hash=token_hash(token) if token else None,
                    state=OrderState.DRAFT,
                    currency=snapshot.currency,
                    total=snapshot.total,
                    snapshot=snapshot.model_dump(mode="json"),
                    holder=holder,
                    units=units,
                    hold_seconds=hold_seconds,
                    contact_email=req.email,
                )
            )
            if snapshot.coupon_code:
                await redeem_coupon(conn, snapshot.coupon_code, order_id, principal)
            await repo.record_creation(
                conn,
                self.outbox,
                OrderPlaced(
                    order_id=str(order_id),
                    currency=snapshot.currency,
                    total=snapshot.total,
                    lines=[Line(sku=line.sku, quantity=line.quantity) for line in snapshot.lines],
                    hold_seconds=hold_seconds,
                ),
                actor=principal.subject if principal else "guest",
                traceparent=traceparent or new_traceparent(),
            )
            body = {
                "order_id": str(order_id),
                "reference": reference_of(order_id),
                "state": OrderState.DRAFT.value,
                "total": snapshot.total,
                "currency": snapshot.currency,
                "snapshot": snapshot.model_dump(mode="json"),
                "links": {
                    "self": f"/v1/orders/{order_id}",
                    "payment_session": f"/v1/orders/{order_id}/payment-session",
                },
            }
            await idem.store(conn, scope=scope, key=idempotency_key, status=202, body=body, order_id=order_id)
        CHECKOUTS.inc()
        if token:
            body = {**body, "lookup_token": token}
        return 202, body, False


async def redeem_coupon(conn: AsyncConnection, code: str, order_id: uuid.UUID, principal: Principal | None) -> None:
    """Counted atomically with the order: the conditional update holds the coupon row, so concurrent
    checkouts can never redeem past the limit; once-per-customer is a unique index."""
    row = (
        await conn.execute(
            update(coupons)
            .where(
                coupons.c.code == code,
                coupons.c.active,
                (coupons.c.max_redemptions.is_(None)) | (coupons.c.redemptions < coupons.c.max_redemptions),
            )
            .values(redemptions=coupons.c.redemptions + 1)
            .returning(coupons.c.once_per_customer)
        )
    ).first()
    if row is None:
        raise Problem(422, "Cannot price this order", f"coupon {code} has been fully redeemed", type="coupon-exhausted")
    if row.once_per_customer and principal is None:
        raise Problem(
            422, "Cannot price this order", f"coupon {code} needs a signed-in customer", type="coupon-requires-account"
        )
    redeemed = (
        await conn.execute(
            pg_insert(coupon_redemptions)
            .values(
                code=code,
                order_id=order_id,
                customer_id=principal.subject if row.once_per_customer and principal else None,
            )
            .on_conflict_do_nothing()
            .returning(coupon_redemptions.c.order_id)
        )
    ).first()
    if redeemed is None:
        raise Problem(
            422, "Cannot price this order", f"coupon {code} can be used once per customer", type="coupon-already-used"
        )
