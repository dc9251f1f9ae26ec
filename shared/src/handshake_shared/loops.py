"""Background loops, all run, watched and stopped one way.

A loop is a name, an iteration and an interval. An iteration that fails is logged and counted, and the loop
backs off (doubling, up to a bound) before it tries again: a loop never ends because a dependency is down.
One that returns True has more work waiting and runs again at once; otherwise the loop waits an interval, or
less when its wake event is set (the relay after a commit).

Stopping sets `stopping` (an iteration with many steps checks it between steps and returns early), then
gives the iteration in flight `stop_grace_seconds` to finish its short transaction; one still running after
that is cancelled, which rolls its transaction back. No loop holds SIGTERM's shutdown up for longer.

Health: a loop that has ended while nobody stopped it never comes back by itself, so liveness fails and the
pod is restarted; a loop that is backing off is reported by /readyz as advisory, without taking the pod out
of rotation (an outage of the database or the provider is not a reason to restart anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from enum import StrEnum

import structlog
from prometheus_client import Counter, Gauge

from handshake_shared.db import describe_error

log = structlog.get_logger("loops")

LOOP_FAILURES = Counter(
    "handshake_background_loop_failures_total",
    "Iterations of a background loop that failed; the loop backs off and goes on",
    ["loop"],
)
LOOP_LAST_SUCCESS = Gauge(
    "handshake_background_loop_last_success_timestamp_seconds",
    "When an iteration of a background loop last finished without error",
    ["loop"],
)

# one round of a loop's work; True: more is waiting, go again without waiting an interval
Iteration = Callable[[], Awaitable[bool | None]]


class LoopState(StrEnum):
    NOT_STARTED = "not_started"
    RUNNING = "running"  # an iteration is in flight
    WAITING = "waiting"  # for its interval (or its wake event)
    BACKING_OFF = "backing_off"  # the last iteration failed
    STOPPED = "stopped"  # asked to stop, and it did
    ENDED = "ended"  # ended with nobody asking (a bug): only a restart brings it back


class LoopEnded(Exception):
    """Liveness: the loop is no longer running, and nobody stopped it."""


class BackingOff(Exception):
    """Readiness, advisory: the loop's last iteration failed; it is waiting to try again."""


class BackgroundLoop:
    def __init__(
        self,
        name: str,
        iteration: Iteration,
        *,
        interval_seconds: float,
        run_at_start: bool = True,
        initial_backoff_seconds: float | None = None,
        max_backoff_seconds: float | None = None,
        wake: asyncio.Event | None = None,
        stop_grace_seconds: float = 5.0,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        """`run_at_start` False: the first iteration comes one interval after start (work a replica restarting
        in a loop must not repeat on every start). The backoff starts at `initial_backoff_seconds` (the
        interval by default) and doubles per failure in a row up to `max_backoff_seconds` (the larger of the
        interval and a minute by default). `on_exit` runs when the loop ends, however it ends."""
        self.name = name
        self.iteration = iteration
        self.interval = interval_seconds
        self.run_at_start = run_at_start
        self.initial_backoff = interval_seconds if initial_backoff_seconds is None else initial_backoff_seconds
        self.max_backoff = max(interval_seconds, 60.0) if max_backoff_seconds is None else max_backoff_seconds
        self.wake = wake
        self.stop_grace = stop_grace_seconds
        self.on_exit = on_exit
        self.stopping = asyncio.Event()
        self.state = LoopState.NOT_STARTED
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self.task: asyncio.Task[None] | None = None

    def backoff(self) -> float:
        return min(self.max_backoff, self.initial_backoff * 2 ** max(self.failures - 1, 0))

    async def run_once(self) -> bool:
        """One iteration, counted and logged the loop's way; True when more work is waiting at once."""
        self.state = LoopState.RUNNING
        try:
            more = await self.iteration()
        except Exception as exc:
            self.failures += 1
            self.last_error = describe_error(exc)
            self.state = LoopState.BACKING_OFF
            LOOP_FAILURES.labels(self.name).inc()
            log.warning(
                "background loop failed",
                loop=self.name,
                failures=self.failures,
                retry_in=self.backoff(),
                error=self.last_error,
            )
            return False
        if self.failures:
            log.info("background loop recovered", loop=self.name, failed_rounds=self.failures)
        self.failures, self.last_error = 0, None
        LOOP_LAST_SUCCESS.labels(self.name).set(time.time())
        return more is True

    async def run(self) -> None:
        try:
            if not self.run_at_start:
                await self._pause(self.interval, wake=None)
            while not self.stopping.is_set():
                more = await self.run_once()
                if self.stopping.is_set():
                    break
                if self.failures:
                    await self._pause(self.backoff(), wake=None)
                elif more:
                    await asyncio.sleep(0)  # let the rest of the process run between two full rounds
                else:
                    self.state = LoopState.WAITING
                    await self._pause(self.interval, wake=self.wake)
        finally:
            self.state = LoopState.STOPPED if self.stopping.is_set() else LoopState.ENDED
            if self.on_exit is not None:
                self.on_exit()

    async def _pause(self, seconds: float, *, wake: asyncio.Event | None) -> None:
        """Until `seconds` pass, the loop is stopped, or `wake` is set."""
        waits = [asyncio.ensure_future(self.stopping.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def start(self) -> asyncio.Task[None]:
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name=self.name)
        return self.task

    def stop(self) -> None:
        """Ask the loop to stop; `stopped()` waits for it."""
        self.stopping.set()

    async def stopped(self) -> None:
        """Stop, and wait for the iteration in flight up to the grace, then cancel it."""
        self.stop()
        task = self.task
        if task is None:
            return
        if not task.done():
            await asyncio.wait({task}, timeout=self.stop_grace)
        if not task.done():
            log.warning("background loop cancelled at stop", loop=self.name, grace_seconds=self.stop_grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif not task.cancelled() and task.exception() is not None:  # already reported by the probes
            log.error("background loop had ended", loop=self.name, error=repr(task.exception()))

    @property
    def running(self) -> bool:
        """Started and not ending: a cancelled task may still be unwinding."""
        return self.task is not None and not self.task.done() and self.task.cancelling() == 0

    async def alive(self) -> None:
        """Liveness: not started yet is not dead; ended without a stop is."""
        if self.task is not None and not self.running and not self.stopping.is_set():
            raise LoopEnded(self.name)

    async def healthy(self) -> None:
        """Advisory: the last iteration went through."""
        await self.alive()
        if self.failures:
            raise BackingOff(f"{self.name}: {self.failures} failures in a row, last: {self.last_error}")


class BackgroundLoops:
    """The loops of one process, started and stopped together, their health one check each."""

    def __init__(self) -> None:
        self._loops: dict[str, BackgroundLoop] = {}

    def add(self, loop: BackgroundLoop) -> BackgroundLoop:
        if loop.name in self._loops:
            raise ValueError(f"a background loop named {loop.name} exists already")
        self._loops[loop.name] = loop
        return loop

    def __getitem__(self, name: str) -> BackgroundLoop:
        return self._loops[name]

    def __contains__(self, name: object) -> bool:
        return name in self._loops

    def __iter__(self) -> Iterator[BackgroundLoop]:
        return iter(list(self._loops.values()))

    def start(self) -> None:
        for loop in self:
            loop.start()

    async def stop(self) -> None:
        """Every loop asked at once, so the slowest one's grace is the whole wait."""
        for loop in self:
            loop.stop()
        await asyncio.gather(*(loop.stopped() for loop in self))

    def liveness(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {loop.name: loop.alive for loop in self}

    def advisory(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {loop.name: loop.healthy for loop in self}
