"""End-to-end fixtures: the four services as separate OS processes on the session's stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from handshake_shared.devstack.storefront import Storefront
from handshake_shared.devstack.system import System
from handshake_shared.testing.fixtures import PROJECT_ROOT


@pytest.fixture(scope="session")
def system(stack) -> Iterator[System]:  # type: ignore[no-untyped-def]
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
