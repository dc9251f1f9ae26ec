"""Short leases on one provider call per row (create an intent, make a refund): a second handler of the
same work (a rebalance, a re-emitted request) waits for the first instead of calling Stripe again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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
