"""Faults for tests only: a process that dies between two phases (dies_after), and a fault-injecting HTTP
proxy in front of the Stripe emulator (FaultProxy).

The service's stripe_api_base points here; every request is forwarded to the emulator unless a rule says
otherwise. A rule matches a method and a path prefix and applies to its next `times` matching requests:

  * drop:        forward, let the provider act, then sever the connection without any answer
  * late:        forward, let the provider act, then answer only after `seconds` (past the client's timeout)
  * status:      answer `status` (500, 429, ...) with a Stripe-shaped error body, never forwarding
  * delay:       wait `seconds`, then forward and answer normally

A plain asyncio server (one request per connection, `Connection: close`), so a severed answer is exactly
what a client sees when the network drops it: the provider did the work, the caller never learns."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from handshake_payment.domain.recovery import FINISHED
from handshake_payment.phases import Phase, Phases


class ProcessDied(Exception):
    """The process handling the message died here: nothing after this point ran."""


@contextlib.contextmanager
def dies_after(phases: Phases[Any], point: str) -> Iterator[None]:
    """While open, the process dies as soon as a row of this phase table is at `point`: the phases after it and
    the handler's apply that follows the table never run, on every retry of the delivery too, so the message
    is dead-lettered and the row stays at `point` (what the phases before it committed stays committed). On
    exit the table is whole again: the next process (a redelivery, reconciliation) is healthy."""

    async def died(subject: Any) -> Any:
        raise ProcessDied(f"the process died at {point}")

    whole = phases.table
    phases.table = (*(p for p in whole if phases.reached(point, p.reaches)), Phase(FINISHED, died))
    try:
        yield
    finally:
        phases.table = whole


@dataclass
class Rule:
    action: str
    method: str
    path: str
    times: int = 1
    status: int = 500
    seconds: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and method == self.method and path.split("?")[0].startswith(self.path)


@dataclass
class Seen:
    method: str
    path: str
    action: str  # forwarded, drop, late, status, delay


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _client: httpx.AsyncClient | None = None

    @property
    def base(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def add(
        self, action: str, method: str, path: str, *, times: int = 1, status: int = 500, seconds: float = 0.0
    ) -> Rule:
        rule = Rule(action=action, method=method, path=path, times=times, status=status, seconds=seconds)
        self.rules.append(rule)
        return rule

    def count(self, method: str, path: str, action: str | None = None) -> int:
        return sum(
            1
            for s in self.seen
            if s.method == method and s.path.split("?")[0] == path and (action is None or s.action == action)
        )

    async def start(self) -> FaultProxy:
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=30)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._client is not None:
            await self._client.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            rule = next((r for r in self.rules if r.matches(method, target)), None)
            if rule is not None:
                rule.hits += 1
            action = rule.action if rule else "forwarded"
            self.seen.append(Seen(method, target, action))
            if action == "status":
                assert rule is not None
                kind = "rate_limit_error" if rule.status == 429 else "api_error"
                payload = json.dumps({"error": {"type": kind, "message": f"injected {rule.status}"}}).encode()
                await self._answer(writer, rule.status, payload, "application/json")
                return
            if action == "delay":
                assert rule is not None
                await asyncio.sleep(rule.seconds)
            answer = await self._forward(method, target, headers, body)
            if action == "drop":
                return  # the provider acted; the answer is lost with the connection
            if action == "late":
                assert rule is not None
                await asyncio.sleep(rule.seconds)
            await self._answer(writer, answer.status_code, answer.content, answer.headers.get("content-type", ""))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        assert self._client is not None
        keep = {
            k: v for k, v in headers.items() if k not in ("host", "content-length", "connection", "accept-encoding")
        }
        path = urlsplit(target)
        url = path.path + (f"?{path.query}" if path.query else "")
        return await self._client.request(method, url, headers=keep, content=body)

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str) -> None:
        head = (
            f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}\r\n"
            f"Content-Type: {content_type or 'application/json'}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
