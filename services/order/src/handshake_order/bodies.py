"""The bodies the order service's HTTP routes accept: what a request may carry, checked before anything runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from handshake_order.checkout import PRINTABLE
from handshake_order.domain.states import OrderState
from handshake_shared.money import MAX_AMOUNT, Currency

# an INTEGER column
MAX_INT = 2**31 - 1


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
