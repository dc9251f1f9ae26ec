"""The reservation lifecycle, declared as a table. A reservation leaves `held` once and never returns."""

from enum import StrEnum

from handshake_shared.statemachine import TransitionTable


class ReservationState(StrEnum):
    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


R = ReservationState

RESERVATION_LIFECYCLE = TransitionTable[ReservationState](
    "reservation",
    {
        # committed: the order was paid and the units are sold; released: the order was cancelled or
        # expired; expired: the reservation's own TTL ran out (the sweeper)
        R.HELD: {R.COMMITTED, R.RELEASED, R.EXPIRED},
        R.COMMITTED: set(),
        R.RELEASED: set(),
        R.EXPIRED: set(),
    },
)
