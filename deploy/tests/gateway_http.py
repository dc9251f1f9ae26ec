"""Requests byte for byte: Stripe-format signatures over exact bodies, request lines that no HTTP client
would normalise first, and a burst whose requests all reach the gateway within a few milliseconds."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any


def stripe_signature(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe sends: HMAC-SHA256 of "<t>.<exact body bytes>"."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def customer_event(event_id: str | None = None, **extra: Any) -> tuple[str, bytes]:
    """A Stripe event about no payment: stored and forwarded, and ignored by payment."""
    event_id = event_id or f"evt_gw_{uuid.uuid4().hex[:20]}"
    event = {
        "id": event_id,
        "object": "event",
        "type": "customer.updated",
        "created": int(time.time()),
        "livemode": False,
        "api_version": "2017-08-15",
        "data": {"object": {"object": "customer", "id": f"cus_{uuid.uuid4().hex[:14]}", **extra}},
    }
    return event_id, json.dumps(event).encode()


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(method: str, target: str, *, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawResponse(int(status_line.split()[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> RawResponse:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return parse_response(b"".join(chunks))


async def _fire_together(port: int, requests: list[bytes], timeout: float) -> list[RawResponse]:
    # connect everyone first (the rate limit counts requests, not connections), then send every
    # request back to back, so the whole burst arrives within a few milliseconds
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in requests))
    for (_, writer), request in zip(conns, requests, strict=True):
        writer.write(request)
    await asyncio.gather(*(writer.drain() for _, writer in conns))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> RawResponse:
        try:
            return parse_response(await asyncio.wait_for(reader.read(), timeout))
        finally:
            writer.close()

    return list(await asyncio.gather(*(answer(r, w) for r, w in conns)))


def fire_together(port: int, requests: list[bytes], timeout: float = 60.0) -> list[RawResponse]:
    return asyncio.run(_fire_together(port, requests, timeout))
