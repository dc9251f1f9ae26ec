"""HTTP plumbing: RFC 9457 problem details for every error, health and metrics endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
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


IDEMPOTENCY_KEY_MAX_LENGTH = 255


def require_idempotency_key(key: str | None) -> str:
    """The Idempotency-Key header an action needs: present, printable ASCII (it is stored and compared as text,
    and an HTTP header value is ASCII anyway) and at most 255 characters; otherwise 400."""
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH or not key.isprintable() or not key.isascii():
        raise Problem(
            400,
            "Idempotency-Key required",
            f"send a unique Idempotency-Key header (printable ASCII, at most {IDEMPOTENCY_KEY_MAX_LENGTH} "
            "characters) with this request",
            type="idempotency-key-required",
        )
    return key


def problem_response(
    status: int, title: str, detail: str | None, type_: str, instance: str, **extra: object
) -> JSONResponse:
    body: dict[str, object] = {"type": type_, "title": title, "status": status, "instance": instance}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        response = problem_response(exc.status, exc.title, exc.detail, exc.type, request.url.path, **exc.extra)
        retry_after = exc.extra.get("retry_after_seconds")
        if isinstance(retry_after, int):
            # the header is what HTTP clients and proxies honour; the body field is for a reader of the problem
            response.headers["Retry-After"] = str(max(1, retry_after))
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed", 401: "Unauthorized", 413: "Payload Too Large"}.get(
            exc.status_code, "HTTP error"
        )
        return problem_response(exc.status_code, title, str(exc.detail), "about:blank", request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return problem_response(
            422,
            "Invalid request",
            "the request body or parameters are not valid",
            PROBLEM_TYPE_BASE + "invalid-request",
            request.url.path,
            errors=errors,
        )

    # A database error never reaches a client as a 500 or as SQL. SQLSTATE decides who is at fault:
    # the database being away (or a transaction that lost a race) is worth retrying -> 503; stored data the
    # request collides with (a duplicate key, a row it references or that references it) -> 409; a value
    # the database cannot hold or a CHECK/NOT NULL it breaks -> 422. Anything else is a bug of ours: 503
    # without detail, logged in full.
    unavailable_classes = (
        "08",
        "40",
        "53",
        "57",
    )  # connection, rollback (serialization, deadlock), resources, shutdown
    conflict_states = {"23001", "23503", "23505", "23P01"}  # restrict, foreign key, unique, exclusion
    invalid_states = {"23502", "23514"}  # not null, check

    def _database_problem(request: Request, exc: Exception) -> JSONResponse:
        orig = getattr(exc, "orig", None)
        sqlstate = str(getattr(orig, "sqlstate", None) or "")
        # asyncpg refuses a value it cannot encode (an int beyond int64) before PostgreSQL sees it
        client_value_error = isinstance(orig, ValueError) or isinstance(getattr(orig, "__cause__", None), ValueError)
        path = request.url.path
        if (
            isinstance(exc, OSError | PoolTimeoutError | DisconnectionError)
            or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
            or sqlstate[:2] in unavailable_classes
        ):
            log.warning("database unavailable", path=path, sqlstate=sqlstate or None, error=type(exc).__name__)
            response = problem_response(
                503,
                "Service unavailable",
                "the database cannot be reached; try again shortly",
                PROBLEM_TYPE_BASE + "database-unavailable",
                path,
            )
            response.headers["Retry-After"] = "1"
            return response
        if sqlstate in conflict_states:
            log.info("request conflicts with stored data", path=path, sqlstate=sqlstate)
            return problem_response(
                409,
                "Conflict",
                "the request conflicts with data stored meanwhile",
                PROBLEM_TYPE_BASE + "conflict",
                path,
            )
        if sqlstate[:2] == "22" or sqlstate in invalid_states or client_value_error:
            log.info("request holds a value the database refuses", path=path, sqlstate=sqlstate or None)
            return problem_response(
                422,
                "Invalid request",
                "a value in the request cannot be stored",
                PROBLEM_TYPE_BASE + "invalid-request",
                path,
            )
        log.error("database error", path=path, sqlstate=sqlstate or None, exc_info=exc)
        response = problem_response(
            503,
            "Service unavailable",
            "the request could not be completed; try again later",
            PROBLEM_TYPE_BASE + "database-error",
            path,
        )
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        return _database_problem(request, exc)

    # the driver's own socket errors (refused, reset, timed out) are not always wrapped by SQLAlchemy
    @app.exception_handler(OSError)
    async def _unreachable(request: Request, exc: OSError) -> JSONResponse:
        return _database_problem(request, exc)

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


class HealthChecks(dict[str, Check]):
    """The readiness checks (the mapping itself: what the pod needs to take traffic), plus `liveness` checks
    (a failure only a restart repairs, such as a background task that has died: cheap, no I/O, so an outage
    never restarts pods) and `advisory` ones (reported by /readyz, never failing it)."""

    def __init__(
        self,
        readiness: Mapping[str, Check],
        *,
        liveness: Mapping[str, Check] | None = None,
        advisory: Mapping[str, Check] | None = None,
    ) -> None:
        super().__init__(readiness)
        self.liveness = dict(liveness or {})
        self.advisory = dict(advisory or {})


async def _run_checks(checks: Mapping[str, Check]) -> tuple[bool, dict[str, str]]:
    async def one(check: Check) -> str:
        try:
            await check()
        except Exception as exc:
            return f"failed: {type(exc).__name__}"
        return "ok"

    # together, so one slow dependency does not push the others past the probe's timeout
    outcomes = await asyncio.gather(*(one(check) for check in checks.values()))
    results = dict(zip(checks, outcomes, strict=True))
    return all(r == "ok" for r in outcomes), results


def ops_router(checks: Mapping[str, Check]) -> APIRouter:
    """`checks`: readiness checks, or a HealthChecks that also carries liveness and advisory checks."""
    router = APIRouter(tags=["operations"])
    liveness: Mapping[str, Check] = getattr(checks, "liveness", {})
    advisory: Mapping[str, Check] = getattr(checks, "advisory", {})

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        ok, results = await _run_checks(liveness)
        body: dict[str, object] = {"status": "ok" if ok else "failed"}
        if results:
            body["checks"] = results
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        (ok, results), (_, advice) = await asyncio.gather(_run_checks(checks), _run_checks(advisory))
        body: dict[str, object] = {"status": "ok" if ok else "unavailable", "checks": results}
        if advice:
            body["advisory"] = advice
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
