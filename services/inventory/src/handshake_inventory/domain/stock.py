"""Stock rules: which units a movement shifts between the columns, and whether an order fits in full."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class MovementKind(StrEnum):
    RESERVE = "reserve"
    COMMIT = "commit"
    RELEASE = "release"
    EXPIRE = "expire"
    RESTOCK = "restock"
    ADJUST = "adjust"


@dataclass(frozen=True)
class Deltas:
    available: int
    reserved: int
    sold: int


def transfer(kind: MovementKind, quantity: int) -> Deltas:
    """The column deltas of moving `quantity` units. They sum to zero: a saga step never creates or
    destroys stock, only an admin adjustment does (and it has no transfer)."""
    if quantity < 1:
        raise ValueError(f"a movement needs a positive quantity, not {quantity}")
    match kind:
        case MovementKind.RESERVE:
            return Deltas(available=-quantity, reserved=quantity, sold=0)
        case MovementKind.COMMIT:
            return Deltas(available=0, reserved=-quantity, sold=quantity)
        case MovementKind.RELEASE | MovementKind.EXPIRE:
            return Deltas(available=quantity, reserved=-quantity, sold=0)
        case MovementKind.RESTOCK:
            # a sale undone (capture failed after commit, refund with restock): sold units are free again
            return Deltas(available=quantity, reserved=0, sold=-quantity)
    raise ValueError(f"{kind} is not a transfer between columns")


class ShortageReason(StrEnum):
    INSUFFICIENT_STOCK = "insufficient_stock"
    UNKNOWN_SKU = "unknown_sku"


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int
    reason: ShortageReason


def merge_lines(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Requested quantity per SKU, in SKU order: the order every writer locks stock rows in, so two
    reservations can never wait on each other's rows (no deadlock)."""
    merged: dict[str, int] = {}
    for sku, quantity in lines:
        if quantity < 1:
            raise ValueError(f"quantity for {sku} must be at least 1")
        merged[sku] = merged.get(sku, 0) + quantity
    return dict(sorted(merged.items()))


def shortages(requested: Mapping[str, int], available: Mapping[str, int]) -> list[Shortage]:
    """Every line that cannot be held in full, in SKU order. Empty means the whole order fits;
    anything else means none of it is reserved."""
    out: list[Shortage] = []
    for sku in sorted(requested):
        wanted = requested[sku]
        if sku not in available:
            out.append(Shortage(sku, wanted, 0, ShortageReason.UNKNOWN_SKU))
        elif available[sku] < wanted:
            out.append(Shortage(sku, wanted, available[sku], ShortageReason.INSUFFICIENT_STOCK))
    return out
