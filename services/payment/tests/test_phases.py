"""The phase engine every provider-calling handler uses: it resumes at the row's recovery point."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import pytest

from handshake_payment.phases import Phase, Phases

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

POINTS = ("recorded", "called", "stored", "finished")


@dataclass(frozen=True)
class Row:
    point: str
    ran: tuple[str, ...] = ()


def step(name: str, reaches: str | None) -> Phase[Row]:
    async def run(row: Row) -> Row:
        return replace(row, point=reaches or row.point, ran=(*row.ran, name))

    return Phase(reaches or "finished", run)


def prepared(table: Phases[Row], point: str) -> Row:
    return asyncio.run(table.prepare(Row(point), lambda r: r.point))


def test_a_row_resumes_at_its_recovery_point_and_runs_every_phase_after_it_once() -> None:
    table = Phases(POINTS, step("call", "called"), step("store", "stored"))
    assert prepared(table, "recorded").ran == ("call", "store")
    assert prepared(table, "called").ran == ("store",)
    assert prepared(table, "stored").ran == ()
    assert prepared(table, "finished").ran == ()


def test_a_phase_that_did_not_reach_its_point_leaves_the_next_one_to_decide() -> None:
    """A refused provider call stays at its point; the next phase still runs and sees the row as it is."""
    table = Phases(POINTS, Phase("called", step("refused", None).run), step("store", "stored"))
    row = prepared(table, "recorded")
    assert (row.ran, row.point) == (("refused", "store"), "stored")


@pytest.mark.parametrize(
    ("points", "reaches"),
    [
        (POINTS, ("stored", "called")),  # out of order
        (POINTS, ("elsewhere",)),  # not a point of the row
        (("recorded", "called"), ("called",)),  # no end
    ],
)
def test_a_table_that_cannot_resume_is_refused_when_it_is_built(
    points: tuple[str, ...], reaches: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError):
        Phases(points, *(step(r, r) for r in reaches))
