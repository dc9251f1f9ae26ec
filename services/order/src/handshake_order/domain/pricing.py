"""Server-side pricing. Every amount is integer minor units; the result is the immutable snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from handshake_shared.money import basis_points_of


class PricingError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    unit_price: int
    currency: str
    active: bool = True


@dataclass(frozen=True)
class Coupon:
    code: str
    kind: str  # "percent" | "fixed"
    percent_bp: int | None = None
    amount_off: int | None = None
    currency: str | None = None
    max_redemptions: int | None = None
    redemptions: int = 0
    expires_at: datetime | None = None
    active: bool = True


@dataclass(frozen=True)
class RequestedLine:
    sku: str
    quantity: int


class SnapshotLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    name: str
    unit_price: int
    quantity: int
    line_total: int


class PriceSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    currency: str
    lines: list[SnapshotLine]
    subtotal: int
    coupon_code: str | None
    discount: int
    region: str
    tax_rate_bp: int
    tax: int
    shipping_method: str
    shipping: int
    total: int


def price(
    lines: list[RequestedLine],
    catalogue: dict[str, Product],
    *,
    region: str,
    tax_rate_bp: int | None,
    shipping_method: str,
    shipping_amount: tuple[int, str] | None,
    coupon: Coupon | None,
    now: datetime,
) -> PriceSnapshot:
    if not lines:
        raise PricingError("empty-cart", "an order needs at least one line")
    merged: dict[str, int] = {}
    for line in lines:
        if line.quantity < 1:
            raise PricingError("invalid-quantity", f"quantity for {line.sku} must be at least 1")
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    currency: str | None = None
    snapshot_lines: list[SnapshotLine] = []
    for sku in sorted(merged):
        product = catalogue.get(sku)
        if product is None or not product.active:
            raise PricingError("unknown-sku", f"{sku} is not for sale")
        if currency is None:
            currency = product.currency
        elif product.currency != currency:
            raise PricingError("mixed-currency", "all lines of an order must share one currency")
        qty = merged[sku]
        snapshot_lines.append(
            SnapshotLine(sku=sku, name=product.name, unit_price=product.unit_price, quantity=qty,
                         line_total=product.unit_price * qty)
        )  # fmt: skip
    assert currency is not None
    subtotal = sum(line.line_total for line in snapshot_lines)

    discount = 0
    if coupon is not None:
        discount = _discount(coupon, subtotal, currency, now)

    if tax_rate_bp is None:
        raise PricingError("unknown-region", f"no tax rate for region {region}")
    if shipping_amount is None:
        raise PricingError("unknown-shipping", f"no shipping method {shipping_method}")
    shipping, shipping_currency = shipping_amount
    if shipping_currency != currency:
        raise PricingError("mixed-currency", f"shipping method {shipping_method} is not priced in {currency}")

    taxable = subtotal - discount
    tax = basis_points_of(taxable, tax_rate_bp)
    return PriceSnapshot(
        currency=currency,
        lines=snapshot_lines,
        subtotal=subtotal,
        coupon_code=coupon.code if coupon else None,
        discount=discount,
        region=region,
        tax_rate_bp=tax_rate_bp,
        tax=tax,
        shipping_method=shipping_method,
        shipping=shipping,
        total=taxable + tax + shipping,
    )


def _discount(coupon: Coupon, subtotal: int, currency: str, now: datetime) -> int:
    if not coupon.active:
        raise PricingError("coupon-inactive", f"coupon {coupon.code} is not active")
    if coupon.expires_at is not None and coupon.expires_at <= now:
        raise PricingError("coupon-expired", f"coupon {coupon.code} has expired")
    if coupon.max_redemptions is not None and coupon.redemptions >= coupon.max_redemptions:
        raise PricingError("coupon-exhausted", f"coupon {coupon.code} has been fully redeemed")
    if coupon.kind == "percent":
        assert coupon.percent_bp is not None
        return basis_points_of(subtotal, coupon.percent_bp)
    assert coupon.amount_off is not None
    if coupon.currency != currency:
        raise PricingError("coupon-currency", f"coupon {coupon.code} is in {coupon.currency}, the order in {currency}")
    # a fixed coupon never takes the goods below zero
    return min(coupon.amount_off, subtotal)
