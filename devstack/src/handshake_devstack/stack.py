"""The whole embedded stack in one object, for `make run`, the benchmark and the test fixtures."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from handshake_devstack.broker import EmbeddedBroker
from handshake_devstack.postgres import EmbeddedPostgres
from handshake_devstack.processes import free_port
from handshake_devstack.stripe_emulator import StripeEmulator


@dataclass
class StackPorts:
    postgres: int
    kafka: int
    stripe: int

    @classmethod
    def free(cls) -> StackPorts:
        return cls(free_port(), free_port(), free_port())


class EmbeddedStack:
    def __init__(self, root: Path, ports: StackPorts, *, partitions: int = 6) -> None:
        self.root = root
        self.logs = root / "logs"
        self.postgres = EmbeddedPostgres(root / "postgres", ports.postgres, log_dir=self.logs)
        self.broker = EmbeddedBroker(ports.kafka, log_dir=self.logs, partitions=partitions)
        self.stripe = StripeEmulator(ports.stripe, log_dir=self.logs)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.postgres.start()
            self.broker.start()
            self.stripe.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for part in (self.stripe, self.broker, self.postgres):
            with contextlib.suppress(Exception):  # one part failing to stop must not keep the rest running
                part.stop()
