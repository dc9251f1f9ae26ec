"""Short leases on one provider call per row (create an intent, make a refund): a second handler of the
same work (a rebalance, a re-emitted request) waits for the first instead of calling Stripe again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared.db import Database

log = structlog.get_logger("payment")

POLL_SECONDS = 0.25


async def acquire(
    take: Callable[[], Awaitable[bool]],
    still_needed: Callable[[], Awaitable[bool]],
    *,
    lease_seconds: float,
    busy: Callable[[], Exception],
) -> bool:
    """True once this handler holds the lease; False when the work no longer needs doing (another handler
    finished it). Waits at most one lease period for a holder that may have crashed mid-call, then raises
    busy() so the consumer retries later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lease_seconds + 1.0
    while True:
        if await take():
            return True
        if not await still_needed():
            return False
        if loop.time() > deadline:
            raise busy()
        await asyncio.sleep(POLL_SECONDS)


class Lease:
    """The lease on one row's provider call, with its take, release and still-needed checks each in a short
    transaction of its own (store/leases.py holds the statement)."""

    def __init__(
        self,
        db: Database,
        lease_seconds: float,
        *,
        take: Callable[[AsyncConnection], Awaitable[bool]],
        release: Callable[[AsyncConnection], Awaitable[None]],
        still_needed: Callable[[AsyncConnection], Awaitable[bool]],
        busy: Callable[[], Exception],
        what: str,
    ) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self._take, self._release, self._still_needed = take, release, still_needed
        self.busy = busy
        self.what = what

    async def acquire(self) -> bool:
        async def take() -> bool:
            async with self.db.transaction() as tx:
                return await self._take(tx)

        async def still_needed() -> bool:
            async with self.db.read() as c:
                return await self._still_needed(c)

        return await acquire(take, still_needed, lease_seconds=self.lease_seconds, busy=self.busy)

    async def release(self) -> None:
        try:
            async with self.db.transaction() as tx:
                await self._release(tx)
        except Exception as exc:
            log.warning("could not release a provider-call lease", lease=self.what, error=repr(exc))
