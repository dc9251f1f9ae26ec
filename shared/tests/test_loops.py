"""The one runner every background loop uses: a failing iteration is counted and backed off from and the loop
goes on; a stop ends a waiting loop without waiting out its interval and lets the iteration in flight finish
within the grace; the probes see every loop."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from handshake_shared.loops import BackgroundLoop, BackgroundLoops, BackingOff, LoopEnded, LoopState

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


def failures_counted(name: str) -> float:
    return REGISTRY.get_sample_value("handshake_background_loop_failures_total", {"loop": name}) or 0.0


async def settle(task: asyncio.Task[None]) -> None:
    """A few turns of the event loop, no clock: enough for a loop that needs no timer to finish."""
    for _ in range(50):
        if task.done():
            return
        await asyncio.sleep(0)


def test_the_backoff_doubles_per_failure_in_a_row_up_to_its_bound() -> None:
    loop = BackgroundLoop("t-backoff", lambda: asyncio.sleep(0), interval_seconds=30, initial_backoff_seconds=1)
    assert loop.max_backoff == 60  # by default the larger of the interval and a minute
    seen = []
    for failures in range(1, 9):
        loop.failures = failures
        seen.append(loop.backoff())
    assert seen == [1, 2, 4, 8, 16, 32, 60, 60]


async def test_a_failing_iteration_is_counted_logged_as_backing_off_and_clears_on_the_next_success() -> None:
    outcomes = [RuntimeError("database down"), RuntimeError("still down"), None]

    async def iteration() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    loop = BackgroundLoop("t-failing", iteration, interval_seconds=10)
    before = failures_counted("t-failing")
    assert await loop.run_once() is False
    assert (loop.state, loop.failures, failures_counted("t-failing") - before) == (LoopState.BACKING_OFF, 1, 1)
    with pytest.raises(BackingOff):
        await loop.healthy()
    await loop.run_once()
    assert (loop.failures, failures_counted("t-failing") - before) == (2, 2)
    assert loop.backoff() == 20  # the interval, doubled
    await loop.run_once()
    assert (loop.failures, loop.last_error) == (0, None)
    await loop.healthy()
    assert REGISTRY.get_sample_value("handshake_background_loop_last_success_timestamp_seconds", {"loop": "t-failing"})


async def test_a_running_loop_survives_failures_and_runs_again_after_its_backoff() -> None:
    calls = 0
    recovered = asyncio.Event()

    async def iteration() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("broker down")
        recovered.set()

    loop = BackgroundLoop(
        "t-survives", iteration, interval_seconds=3600, initial_backoff_seconds=0.001, max_backoff_seconds=0.002
    )
    before = failures_counted("t-survives")
    task = loop.start()
    await recovered.wait()
    assert (calls, failures_counted("t-survives") - before, loop.failures) == (3, 2, 0)
    assert not task.done()
    await loop.stopped()
    assert loop.state == LoopState.STOPPED


async def test_more_work_runs_again_at_once_and_a_wake_event_cuts_the_wait_short() -> None:
    rounds: list[int] = []
    wake = asyncio.Event()
    third = asyncio.Event()

    async def iteration() -> bool:
        rounds.append(len(rounds))
        if len(rounds) == 3:
            third.set()
        return len(rounds) == 1  # the first round leaves work behind, the second does not

    loop = BackgroundLoop("t-wake", iteration, interval_seconds=3600, wake=wake)
    task = loop.start()
    await settle(task)
    assert rounds == [0, 1] and loop.state == LoopState.WAITING  # the second at once, then the long wait
    wake.set()
    await third.wait()
    await loop.stopped()


async def test_a_stop_ends_a_waiting_loop_without_waiting_out_its_interval() -> None:
    ran = asyncio.Event()

    async def iteration() -> None:
        ran.set()

    waiting = BackgroundLoop("t-stop-waiting", iteration, interval_seconds=3600)
    task = waiting.start()
    await ran.wait()
    waiting.stop()
    await settle(task)
    assert task.done() and not task.cancelled() and waiting.state == LoopState.STOPPED

    never = BackgroundLoop("t-stop-before-first", iteration, interval_seconds=3600, run_at_start=False)
    ran.clear()
    task = never.start()
    await asyncio.sleep(0)
    never.stop()
    await settle(task)
    assert task.done() and not ran.is_set()


async def test_a_stop_lets_the_iteration_in_flight_finish_and_cancels_one_that_outlasts_the_grace() -> None:
    finished: list[str] = []
    started = asyncio.Event()

    async def cooperative() -> None:
        started.set()
        await loop.stopping.wait()  # a batch boundary: it looks and returns early
        finished.append("returned")

    loop = BackgroundLoop("t-grace", cooperative, interval_seconds=3600, stop_grace_seconds=3600)
    loop.start()
    await started.wait()
    await loop.stopped()
    assert finished == ["returned"] and loop.state == LoopState.STOPPED

    started.clear()

    async def stuck() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            finished.append("cancelled")
            raise

    hung = BackgroundLoop("t-hung", stuck, interval_seconds=3600, stop_grace_seconds=0)
    hung.start()
    await started.wait()
    await hung.stopped()
    assert finished == ["returned", "cancelled"] and hung.state == LoopState.STOPPED


async def test_the_probes_see_every_loop_and_one_that_ended_unasked_fails_liveness() -> None:
    loops = BackgroundLoops()
    started = asyncio.Event()

    async def iteration() -> None:
        started.set()

    first = loops.add(BackgroundLoop("t-first", iteration, interval_seconds=3600))
    loops.add(BackgroundLoop("t-second", iteration, interval_seconds=3600, run_at_start=False))
    with pytest.raises(ValueError):
        loops.add(BackgroundLoop("t-first", iteration, interval_seconds=1))
    assert set(loops.liveness()) == set(loops.advisory()) == {"t-first", "t-second"}
    for check in loops.liveness().values():
        await check()  # not started yet is not dead
    loops.start()
    await started.wait()
    assert first.task is not None
    first.task.cancel()  # a loop that ends with nobody asking: a bug only a restart repairs
    await settle(first.task)
    with pytest.raises(LoopEnded):
        await loops.liveness()["t-first"]()
    with pytest.raises(LoopEnded):
        await loops.advisory()["t-first"]()
    await loops.liveness()["t-second"]()
    await loops.stop()
    assert loops["t-second"].state == LoopState.STOPPED and first.state == LoopState.ENDED
    await loops.liveness()["t-second"]()  # stopped on purpose is not a failure
