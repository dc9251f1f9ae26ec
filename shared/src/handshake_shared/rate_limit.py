"""Per-key rate limits inside a service, so they hold whether or not a gateway is in front.

GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp per key): a key may make
`burst` requests at once and then `rate` per second. Memory is bounded: idle keys are forgotten first,
and beyond `max_keys` the least recently seen go. Limits are per process; with N replicas a client can
reach N times the rate, which is why the settings are per replica and the gateway keeps its own."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    rate_per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate_per_second <= 0 or self.burst < 1:
            raise ValueError("a limit needs a positive rate and a burst of at least 1")


class KeyedRateLimiter:
    def __init__(self, limit: Limit, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self.clock = clock
        self._interval = 1.0 / limit.rate_per_second
        # how far ahead of now a key's theoretical arrival time may run: the burst beyond the first request
        self._tolerance = self._interval * (limit.burst - 1)
        self._tat: OrderedDict[str, float] = OrderedDict()

    def hit(self, key: str) -> float:
        """Count one request for key. 0.0 when allowed; otherwise the seconds until it would be (nothing is
        counted for a refused request, so a client hammering a closed door does not push the door further)."""
        now = self.clock()
        tat = max(self._tat.get(key, now), now)
        if tat - now > self._tolerance:
            return tat - now - self._tolerance
        self._tat[key] = tat + self._interval
        self._tat.move_to_end(key)
        self._forget(now)
        return 0.0

    def _forget(self, now: float) -> None:
        # the oldest entries come first: drop the ones whose bucket is full again (they hold no information),
        # then, if still too many, the least recently seen
        while self._tat:
            key, tat = next(iter(self._tat.items()))
            if tat <= now or len(self._tat) > self.max_keys:
                del self._tat[key]
            else:
                break

    def __len__(self) -> int:
        return len(self._tat)


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxy_hops: int) -> str:
    """The address a limit is keyed by. X-Forwarded-For is believed only for the hops the operator declares
    (the gateway in front of the service): its rightmost entries were written by them, anything to their
    left may be made up by the client."""
    if trusted_proxy_hops <= 0 or not forwarded_for:
        return peer or "unknown"
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    if len(hops) < trusted_proxy_hops:
        return hops[0] if hops else (peer or "unknown")
    return hops[-trusted_proxy_hops]
