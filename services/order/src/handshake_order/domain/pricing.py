"""Server-side pricing. Every amount is integer minor units; the result is the immutable snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from handshake_shared.money import MAX_AMOUNT, basis_points_of

# units of one SKU in one order, after repeated lines are merged: the limit of a line in the order.placed
# contract (events/base.py Line), which inventory reserves in one row
MAX_LINE_QUANTITY = 1000


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
    max_units: int | None = None,
) -> PriceSnapshot:
    """`max_units`: the most units one order may hold (all lines together), checked before anything else."""
    if not lines:
        raise PricingError("empty-cart", "an order needs at least one line")
    merged: dict[str, int] = {}
    for line in lines:
        if line.quantity < 1:
            raise PricingError("invalid-quantity", f"quantity for {line.sku} must be at least 1")
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    units = sum(merged.values())
    if max_units is not None and units > max_units:
        raise PricingError("too-many-units", f"an order holds at most {max_units} units; this one has {units}")
    for sku, qty in merged.items():
        if qty > MAX_LINE_QUANTITY:
            raise PricingError(
                "quantity-too-large", f"at most {MAX_LINE_QUANTITY} units of {sku} per order (all its lines together)"
            )
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
            SnapshotLine(
                sku=sku,
                name=product.name,
                unit_price=product.unit_price,
                quantity=qty,
                line_total=product.unit_price * qty,
            )
        )
    assert currency is not None
    subtotal = sum(line.line_total for line in snapshot_lines)
    # Python integers never overflow; the BIGINT columns, asyncpg and JSON readers downstream do. Every
    # amount is non-negative, so bounding the subtotal bounds each line, and the total bounds tax and shipping.
    if subtotal > MAX_AMOUNT:
        raise PricingError("amount-too-large", f"the order's goods would exceed {MAX_AMOUNT} minor units")

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
    total = taxable + tax + shipping
    if total > MAX_AMOUNT:
        raise PricingError("amount-too-large", f"the order total would exceed {MAX_AMOUNT} minor units")
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
        total=total,
    )


def _discount(coupon: Coupon, subtotal: int, currency: str, now: datetime) -> int:
    if not coupon.active:
        raise PricingError("coupon-inactive", f"coupon {coupon.code} is not active")
    if coupon.expires_at is not None and coupon.expires_at <= now:
        raise PricingError("coupon-expired", f"coupon {coupon.code} has expired")
    if coupon.max_redemptions is not None and coupon.redemptions >= coupon.max_redemptions:
        raise PricingError("coupon-exhausted", f"coupon {coupon.code} has been fully redeemed")
    # rows written before the catalogue API checked kind against its fields may lack the one they need
    if coupon.kind == "percent" and coupon.percent_bp is not None:
        return basis_points_of(subtotal, coupon.percent_bp)
    if coupon.kind != "fixed" or coupon.amount_off is None:
        raise PricingError("coupon-misconfigured", f"coupon {coupon.code} cannot be applied; ask the shop to fix it")
    if coupon.currency != currency:
        raise PricingError("coupon-currency", f"coupon {coupon.code} is in {coupon.currency}, the order in {currency}")
    # a fixed coupon never takes the goods below zero
    return min(coupon.amount_off, subtotal)
