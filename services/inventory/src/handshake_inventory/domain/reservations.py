"""The reservation lifecycle, declared as a table, and where a reservation's units are in each state.

A reservation never returns to `held`. Units leave `held` once: sold (committed) or back to available
(released by the order, expired by the sweeper). Money is truth, so a payment that arrives after the
hold lapsed may still commit the reservation, but only by reserving its lines again from available
stock. A committed reservation whose sale is undone (capture failed, refund with restock) is
restocked: its units go back to available, once.
"""

from enum import StrEnum

from handshake_inventory.domain.stock import MovementKind as M
from handshake_shared.statemachine import TransitionTable


class ReservationState(StrEnum):
    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"
    RESTOCKED = "restocked"


R = ReservationState

RESERVATION_LIFECYCLE = TransitionTable[ReservationState](
    "reservation",
    {
        # committed: paid or authorized, the units are sold; released: the order was cancelled or
        # expired; expired: the reservation's own TTL ran out (the sweeper)
        R.HELD: {R.COMMITTED, R.RELEASED, R.EXPIRED},
        # a late payment: committed again only after re-reserving every line (all or nothing)
        R.RELEASED: {R.COMMITTED},
        R.EXPIRED: {R.COMMITTED},
        R.RESTOCKED: {R.COMMITTED},
        # the sale was undone (capture failed after commit, refund with restock)
        R.COMMITTED: {R.RESTOCKED},
    },
)

# the stock column a reservation's units sit in; None means they went back to available
UNITS_IN: dict[ReservationState, str | None] = {
    R.HELD: "reserved",
    R.COMMITTED: "sold",
    R.RELEASED: None,
    R.EXPIRED: None,
    R.RESTOCKED: None,
}

# states that hold nothing: committing from them means reserving the lines again first
LAPSED = frozenset(state for state, column in UNITS_IN.items() if column is None)

# the stock movements each transition makes, in this order, for every line of the reservation
MOVEMENTS: dict[tuple[ReservationState, ReservationState], tuple[M, ...]] = {
    (R.HELD, R.COMMITTED): (M.COMMIT,),
    (R.HELD, R.RELEASED): (M.RELEASE,),
    (R.HELD, R.EXPIRED): (M.EXPIRE,),
    # reserving first keeps the rule "only reserved units are sold": the reserve is the
    # conditional update that refuses units that are not available
    **{(lapsed, R.COMMITTED): (M.RESERVE, M.COMMIT) for lapsed in LAPSED},
    (R.COMMITTED, R.RESTOCKED): (M.RESTOCK,),
}


def hold_seconds(asked: int | None, maximum: int) -> int:
    """How long a reservation holds its stock: what the order asked for (a guest's short hold, or the full
    checkout hold once the payment session is opened), never longer than inventory allows; nothing asked
    (an order from before holds were asked for): the maximum."""
    return maximum if asked is None else min(asked, maximum)
