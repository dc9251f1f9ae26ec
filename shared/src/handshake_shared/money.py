"""Money as integer minor units plus an ISO 4217 currency; never a float."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

# Currencies we price in, with their minor-unit exponent. A currency missing here
# is refused rather than guessed: a wrong exponent is a hundredfold pricing error.
MINOR_UNITS: dict[str, int] = {"EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "JPY": 0, "SEK": 2}

# The largest amount (minor units) any price, line, total or refund may have: every JSON reader holds it
# exactly (JavaScript numbers end at 2**53), and a sum of many such amounts still fits a BIGINT column.
MAX_AMOUNT = 2**53 - 1


class CurrencyError(ValueError):
    pass


def check_currency(code: str) -> str:
    code = code.upper()
    if code not in MINOR_UNITS:
        raise CurrencyError(f"unsupported currency {code!r}")
    return code


def _normalised_currency(value: Any) -> Any:
    return check_currency(value) if isinstance(value, str) else value


# a currency in an API request: case-insensitive on the way in, upper case (and supported) once parsed
Currency = Annotated[
    str,
    BeforeValidator(_normalised_currency),
    WithJsonSchema({"type": "string", "enum": sorted(MINOR_UNITS), "description": "ISO 4217 code"}),
]


class Money(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: int = Field(description="integer minor units (cents for EUR)")
    currency: str = Field(min_length=3, max_length=3)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return check_currency(v)

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def times(self, n: int) -> Money:
        return Money(amount=self.amount * n, currency=self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyError(f"cannot mix {self.currency} and {other.currency}")


def basis_points_of(amount: int, basis_points: int) -> int:
    """amount * bp / 10000, rounded half up, exact in integers (1 bp = 0.01 %)."""
    if amount < 0 or basis_points < 0:
        raise ValueError("amount and basis points must be non-negative")
    return (amount * basis_points + 5_000) // 10_000
