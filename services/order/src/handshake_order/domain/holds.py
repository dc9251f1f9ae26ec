"""How much stock one holder may keep from other shoppers, and until when: the held-units cap.

A holder is a signed-in customer or, for guests, the client address. Every unpaid order of a holder keeps
its units out of stock until it is paid, cancelled or its hold lapses; a holder whose orders already hold
the cap gets no new order until enough of them lapse. Pure: the checkout reads the holds and asks here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from handshake_order.domain.states import OrderState as S

# the states in which an order's units are reserved for it and not yet sold (the saga's EXPIRABLE states)
HOLDING_STATES = frozenset({S.DRAFT, S.PAYMENT_PENDING, S.PAYMENT_FAILED})


@dataclass(frozen=True)
class Hold:
    units: int
    placed_at: datetime
    # the short hold of an order whose payment session is not opened yet; None: the full hold
    short_hold_seconds: int | None
    payment_session_opened: bool

    def lapses_at(self, full_hold_seconds: int) -> datetime:
        short = self.short_hold_seconds is not None and not self.payment_session_opened
        seconds = self.short_hold_seconds if short and self.short_hold_seconds is not None else full_hold_seconds
        return self.placed_at + timedelta(seconds=seconds)


def wait_before_holding(
    holds: list[Hold], units: int, *, cap: int, full_hold_seconds: int, now: datetime
) -> int | None:
    """None when `units` more fit under the cap; otherwise the seconds until enough of the current holds
    lapse for them to fit (at least 1: a hold past its time is released by inventory's next sweep)."""
    held = sum(h.units for h in holds)
    if held + units <= cap:
        return None
    for hold in sorted(holds, key=lambda h: h.lapses_at(full_hold_seconds)):
        held -= hold.units
        if held + units <= cap:
            return max(1, math.ceil((hold.lapses_at(full_hold_seconds) - now).total_seconds()))
    # more than the cap in one order: the per-order limit, which is never above the cap, refuses it first
    raise ValueError(f"{units} units can never fit under a cap of {cap}")
