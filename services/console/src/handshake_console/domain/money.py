"""Integer minor units shown and read with the currency's own exponent (JPY has none, EUR two)."""

from __future__ import annotations

import re

from handshake_shared.money import MAX_AMOUNT, MINOR_UNITS


class AmountError(ValueError):
    pass


def format_money(amount: int | None, currency: str | None) -> str:
    """1234, "EUR" -> "12.34 EUR"; -5, "EUR" -> "-0.05 EUR"; 500, "JPY" -> "500 JPY". An unknown currency is
    shown in minor units, labelled so, rather than guessed (a wrong exponent misstates the amount a hundredfold)."""
    if amount is None:
        return "—"
    code = (currency or "").upper()
    exponent = MINOR_UNITS.get(code)
    if exponent is None:
        return f"{amount} minor units {code}".rstrip()
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    text = str(whole)
    if exponent:
        text += "." + str(fraction).zfill(exponent)
    return f"{sign}{text} {code}"


_AMOUNT = re.compile(r"^\s*(\d{1,16})(?:[.,](\d+))?\s*$")


def parse_amount(text: str, currency: str) -> int:
    """ "12.5" in EUR -> 1250. More decimals than the currency has, a sign, or a non-positive amount is refused."""
    code = currency.upper()
    exponent = MINOR_UNITS.get(code)
    if exponent is None:
        raise AmountError(f"unsupported currency {code!r}")
    match = _AMOUNT.match(text or "")
    if not match:
        raise AmountError("enter an amount such as 12.50")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > exponent:
        raise AmountError(f"{code} has {exponent} decimal places" if exponent else f"{code} has no decimal places")
    amount = int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    if amount <= 0:
        raise AmountError("the amount must be more than zero")
    if amount > MAX_AMOUNT:
        raise AmountError("the amount is too large")
    return amount
