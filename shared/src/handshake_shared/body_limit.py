"""Request bodies over a size limit are refused with 413 before the application holds them in memory.

Pure ASGI, so it sees the body as the server delivers it: a declared Content-Length over the limit is refused
before a byte is read, and a streamed (chunked) body is counted while it arrives and refused as soon as it
passes the limit, whatever the route was doing with it; a route that answers without reading the body has
the rest read (up to the limit) before its answer goes out. A route may have a limit of its own (the Stripe
webhook's 1 MiB); everything else gets the service's limit (HANDSHAKE_HTTP_MAX_BODY_BYTES)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handshake_shared.http import PROBLEM_TYPE_BASE, problem_response


class _TooLarge(Exception):
    """Raised into the application from receive(): whatever it does with it, the client gets the 413."""


class BodySizeLimit:
    def __init__(self, app: Any, max_bytes: int, routes: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = dict(routes or {})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.routes.get(scope["path"], self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, limit)
            return

        received = 0
        complete = False  # the whole body was received
        exceeded = False
        response_started = False

        async def counting_receive() -> Any:
            nonlocal received, complete, exceeded
            message = await receive()
            if message["type"] == "http.disconnect":
                complete = True
            elif message["type"] == "http.request" and not response_started:
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start" and not complete and not exceeded:
                # a route that answers without reading the body (a GET, a refusal) still gets no oversize body:
                # what is left is read, up to the limit, before its answer goes out
                try:
                    while not complete:
                        await counting_receive()
                except _TooLarge:
                    pass
            if exceeded:
                return  # the application's answer to the refused body is replaced by the 413
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not response_started:
            await _refuse(scope, receive, send, limit)


def _content_length(scope: Any) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            # a malformed value is the server's and the application's to refuse; only a number is judged here
            return int(value) if value.isdigit() else None
    return None


async def _refuse(scope: Any, receive: Any, send: Any, limit: int) -> None:
    response = problem_response(
        413,
        "Payload too large",
        f"the request body exceeds {limit} bytes",
        PROBLEM_TYPE_BASE + "payload-too-large",
        scope["path"],
        max_bytes=limit,
    )
    # the rest of the body is not read: the connection is closed after the answer
    response.headers["Connection"] = "close"
    await response(scope, receive, send)
