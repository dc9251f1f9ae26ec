"""HTTP plumbing: RFC 9457 problem details for every error, health and metrics endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("http")

PROBLEM_TYPE_BASE = "https://handshake.dev/problems/"


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str | None = None, *, type: str | None = None, **extra: object):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = PROBLEM_TYPE_BASE + type if type else "about:blank"
        self.extra = extra


def problem_response(status: int, title: str, detail: str | None, type_: str, instance: str, **extra: object) -> JSONResponse:
    body: dict[str, object] = {"type": type_, "title": title, "status": status, "instance": instance}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, exc.type, request.url.path, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed", 401: "Unauthorized"}.get(exc.status_code, "HTTP error")
        return problem_response(exc.status_code, title, str(exc.detail), "about:blank", request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return problem_response(
            422, "Invalid request", "the request body or parameters are not valid",
            PROBLEM_TYPE_BASE + "invalid-request", request.url.path, errors=errors,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return problem_response(500, "Internal error", None, "about:blank", request.url.path)


Check = Callable[[], Awaitable[None]]

INTERNAL_PREFIX = "/internal/"


class InternalListener:
    """One process, two listeners: `/internal/...` (service-to-service) answers only on the internal port,
    everything else only on the public port. The Service in front of the public port can then expose the
    pod without ever exposing an internal route, whatever a gateway or a misrouted request does.
    Without an internal port, internal routes answer nowhere."""

    def __init__(self, app: Any, internal_port: int | None) -> None:
        self.app = app
        self.internal_port = internal_port

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            server = scope.get("server") or (None, None)
            on_internal_port = self.internal_port is not None and server[1] == self.internal_port
            if scope["path"].startswith(INTERNAL_PREFIX) != on_internal_port:
                response = problem_response(404, "Not Found", None, "about:blank", scope["path"])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def ops_router(checks: dict[str, Check]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        ok = True
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:
                ok = False
                results[name] = f"failed: {type(exc).__name__}"
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": results}, status_code=200 if ok else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
