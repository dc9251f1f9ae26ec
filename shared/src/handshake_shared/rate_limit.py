"""Per-key rate limits inside a service, so they hold whether or not a gateway is in front.

GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp per key): a key may make
`burst` requests at once and then `rate` per second. Memory is bounded: idle keys are forgotten first,
and beyond `max_keys` the least recently seen go. Limits are per process; with N replicas a client can
reach N times the rate, which is why the settings are per replica and the gateway keeps its own."""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handshake_shared.http import PROBLEM_TYPE_BASE, problem_response


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


@dataclass(frozen=True)
class RouteLimit:
    """One limit on one kind of request: `method` and a full-match `path` pattern; `per` is what the bucket
    is keyed by: the client address, or the authenticated subject (requests without a token are not
    counted there, the address limit still holds for them)."""

    name: str
    method: str
    path: str
    limit: Limit
    per: str  # "address" | "subject"


class RateLimits:
    """ASGI middleware: a request over any of its route's limits gets 429 problem+json with Retry-After
    and never reaches the route, so a refused checkout holds no stock and creates no payment intent."""

    def __init__(
        self,
        app: Any,
        routes: list[RouteLimit],
        *,
        trusted_proxy_hops: int,
        subject_of: Callable[[str | None], str | None],
        max_keys: int = 100_000,
    ) -> None:
        self.app = app
        self.trusted_proxy_hops = trusted_proxy_hops
        self.subject_of = subject_of
        # routes with the same name and key share one budget (an order read and its payment session are both
        # lookups); the first route of a name sets its limit
        shared: dict[tuple[str, str], KeyedRateLimiter] = {}
        for r in routes:
            shared.setdefault((r.name, r.per), KeyedRateLimiter(r.limit, max_keys=max_keys))
        self.routes = [(r, re.compile(r.path), shared[(r.name, r.per)]) for r in routes]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            matching = [
                (r, lim)
                for r, pattern, lim in self.routes
                if r.method == scope["method"] and pattern.fullmatch(scope["path"])
            ]
            if matching:
                wait = self._wait(scope, matching)
                if wait > 0:
                    await _too_many(scope, receive, send, wait)
                    return
        await self.app(scope, receive, send)

    def _wait(self, scope: Any, matching: list[tuple[RouteLimit, KeyedRateLimiter]]) -> float:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        peer = (scope.get("client") or (None, None))[0]
        address = client_address(peer, headers.get("x-forwarded-for"), self.trusted_proxy_hops)
        subject: str | None = None
        if any(r.per == "subject" for r, _ in matching):
            subject = self.subject_of(headers.get("authorization"))
        wait = 0.0
        for route, limiter in matching:
            key = address if route.per == "address" else subject
            if key is not None:
                wait = max(wait, limiter.hit(key))
        return wait


def subject_from_bearer(verify: Callable[[str], Any]) -> Callable[[str | None], str | None]:
    """The subject of a valid bearer token, else None: an unverified `sub` would let anyone spend a victim's
    budget (or dodge their own by changing it)."""

    def subject_of(authorization: str | None) -> str | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return str(verify(token).subject)
        except Exception:  # an invalid token is the route's to refuse (401); here it simply has no subject
            return None

    return subject_of


async def _too_many(scope: Any, receive: Any, send: Any, wait: float) -> None:
    retry_after = max(1, math.ceil(wait))
    response = problem_response(
        429, "Too Many Requests", f"try again in {retry_after} s", PROBLEM_TYPE_BASE + "rate-limited", scope["path"]
    )
    response.headers["Retry-After"] = str(retry_after)
    await response(scope, receive, send)
