"""Calls to the four services, always with the caller's own bearer token. Every answer becomes an `Answer`:
the data, or the service's problem detail as it sent it, or a plain "not available" when the service does not
offer the endpoint (yet) or cannot be reached. Nothing here raises for what a service answers, so one panel
that fails never takes the page down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import structlog

log = structlog.get_logger("console.backend")

ROUTE_MISSING = "about:blank"


@dataclass(frozen=True)
class Answer:
    status: int
    data: Any = None
    problem: dict[str, Any] | None = None
    # why there is neither data nor a problem from the service: not configured, not offered, unreachable
    unavailable: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.unavailable is None and 200 <= self.status < 300

    @property
    def message(self) -> str:
        if self.unavailable:
            return self.unavailable
        if self.problem:
            detail = self.problem.get("detail") or ""
            return f"{self.status} {self.problem.get('title', 'Error')}" + (f": {detail}" if detail else "")
        return ""


def not_available(why: str) -> Answer:
    return Answer(status=0, unavailable=why)


class Backend:
    def __init__(self, urls: dict[str, str | None], http: httpx.AsyncClient, *, timeout: float = 10.0) -> None:
        self.urls = urls
        self.http = http
        self.timeout = timeout

    async def get(self, service: str, path: str, token: str, params: Any = None) -> Answer:
        return await self._call("GET", service, path, token, params=params)

    async def post(
        self, service: str, path: str, token: str, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Answer:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return await self._call("POST", service, path, token, json=body, headers=headers)

    async def _call(
        self, method: str, service: str, path: str, token: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Answer:
        base = self.urls.get(service)
        if not base:
            return not_available(f"not available: no address configured for the {service} service")
        try:
            response = await self.http.request(
                method,
                base.rstrip("/") + path,
                timeout=self.timeout,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})},
                **kwargs,
            )
        except httpx.HTTPError as exc:
            log.warning("service call failed", service=service, path=path, error=type(exc).__name__)
            return not_available(f"not available: the {service} service cannot be reached ({type(exc).__name__})")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code < 300:
            return Answer(status=response.status_code, data=body)
        problem = body if isinstance(body, dict) else {"title": response.reason_phrase or "Error"}
        # a route the service does not have: FastAPI's own 404/405 carries no problem type of ours
        if response.status_code in (404, 405) and problem.get("type", ROUTE_MISSING) == ROUTE_MISSING:
            return Answer(
                status=response.status_code, unavailable=f"not available: the {service} service does not offer this yet"
            )
        return Answer(status=response.status_code, problem=problem)
