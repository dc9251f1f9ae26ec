"""One shape for a handler that calls the provider: `prepare`, then `apply`.

`prepare` is a short table of phases. A phase never runs inside the consumer's transaction: it opens short
transactions of its own around the provider call, and the row records the recovery point the phase reached
in the transaction that commits its result (domain/recovery.py names the points). A phase whose point the
row has already reached is skipped, so a redelivery, a retry after a crash and a reconciliation run all
resume where the last one stopped, with the provider asked again only under the same idempotency key.
`apply` is the consumer's one transaction (state + audit + outbox + inbox) and moves the row to finished."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from handshake_payment.domain.recovery import FINISHED

S = TypeVar("S")


@dataclass(frozen=True)
class Phase(Generic[S]):
    """A step of prepare that is done once the row is at `reaches`."""

    reaches: str
    run: Callable[[S], Awaitable[S]]


class Phases(Generic[S]):
    def __init__(self, points: Sequence[str], *table: Phase[S]) -> None:
        self.points = tuple(points)
        self.table = table
        if self.points[-1] != FINISHED:
            raise ValueError(f"recovery points end at {FINISHED}: {self.points}")
        order = [self.points.index(phase.reaches) for phase in table]  # ValueError for an unknown point
        if order != sorted(order):
            raise ValueError(f"phases out of the order of their points: {[p.reaches for p in table]}")

    def reached(self, at: str, point: str) -> bool:
        return self.points.index(at) >= self.points.index(point)

    async def prepare(self, subject: S, at: Callable[[S], str]) -> S:
        """Run, in order, every phase whose point the subject has not reached; `at` reads its point now."""
        for phase in self.table:
            if not self.reached(at(subject), phase.reaches):
                subject = await phase.run(subject)
        return subject
