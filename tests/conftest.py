"""End-to-end fixtures: the four services as separate OS processes on the session's stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from handshake_devstack.broker import EmbeddedBroker
from handshake_devstack.processes import free_port
from handshake_devstack.storefront import Storefront
from handshake_devstack.system import System
from handshake_devstack.testing.fixtures import PROJECT_ROOT


@pytest.fixture(scope="session")
def system(stack) -> Iterator[System]:
    s = System(stack, PROJECT_ROOT, database_prefix=f"e2e_{uuid.uuid4().hex[:6]}_")
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def shop(system: System) -> Storefront:
    storefront = Storefront(system)
    storefront.seed()
    return storefront


@contextmanager
def system_of_its_own(stack, name: str, **kwargs: Any) -> Iterator[Storefront]:
    """Four services on a broker of their own: nothing they do on the bus (or to the broker) reaches
    another system on the same stack. Seeded with the demo catalogue and stock."""
    prefix = f"{name}_{uuid.uuid4().hex[:6]}_"
    broker = EmbeddedBroker(free_port(), log_dir=Path(stack.logs) / prefix.strip("_"))
    broker.start()
    system = System(stack, PROJECT_ROOT, database_prefix=prefix, broker=broker, **kwargs)
    try:
        system.start()
        shop = Storefront(system)
        shop.seed()
        yield shop
    finally:
        system.stop()
        broker.stop()
