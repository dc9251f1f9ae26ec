"""Session-wide real infrastructure for tests: PostgreSQL, the Kafka-protocol broker, the Stripe emulator.

HANDSHAKE_TEST_INFRA=embedded (default) starts the embedded stack; =containers uses testcontainers'
PostgreSQL and Apache Kafka (needs Docker) with the Stripe emulator still local."""

from __future__ import annotations

import asyncio
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from handshake_devstack.stack import EmbeddedStack, StackPorts
from handshake_devstack.tokens import DEV_ISSUER
from handshake_shared.migrations import upgrade

PROJECT_ROOT = Path(__file__).resolve().parents[4]

# Settings built inside a test belong to the test environment (production's checks are tested on purpose,
# with environment="production") and trust the development token issuer, as the services of `make run` do.
# Processes started by System get an environment of their own.
os.environ["HANDSHAKE_ENVIRONMENT"] = "test"
os.environ["HANDSHAKE_JWT_PUBLIC_KEY"] = DEV_ISSUER.public_pem
# tests drive many buyers from one address; the abuse limits are tested on their own, switched on
os.environ["HANDSHAKE_RATE_LIMITS_ENABLED"] = "false"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    infra = os.environ.get("HANDSHAKE_TEST_INFRA", "embedded")
    root = tmp_path_factory.mktemp("stack")
    if infra == "containers":
        from handshake_devstack.testing.containers import container_stack

        # the containers' stack offers the same attributes the tests use, not the same class
        with container_stack(root) as containers:
            yield containers  # type: ignore[misc]
        return
    embedded = EmbeddedStack(root, StackPorts.free())
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


@pytest.fixture
def fresh_database(stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    """fresh_database("handshake_order") -> URL of a new database migrated with that service's history."""

    def make(service_package: str) -> str:
        name = f"t_{service_package.removeprefix('handshake_')}_{uuid.uuid4().hex[:10]}"
        url = stack.postgres.create_database(name)
        upgrade(f"{service_package}.migrations", url)
        return url

    return make


@asynccontextmanager
async def serve_in_process(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan (broker, consumers, relay) and talk to it over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


def service_app(service: str) -> FastAPI:
    """The app `create_app` builds for `service` (its package name: "order", "webhook_ingest") from the
    settings the environment gives; nothing is started, so what it mounts is read without a stack."""
    app_module = importlib.import_module(f"handshake_{service}.app")
    settings_module = importlib.import_module(f"handshake_{service}.settings")
    settings_class = next(
        v
        for k, v in vars(settings_module).items()
        if k.endswith("Settings") and getattr(v, "__module__", "") == settings_module.__name__
    )
    app: FastAPI = app_module.create_app(settings_class())
    return app


def isolated_kafka_settings(stack: EmbeddedStack) -> dict[str, object]:
    """Broker settings for a service started inside a test: its own consumer groups (a group that
    another test just left would first wait for that member's session to expire) and a short session."""
    tag = uuid.uuid4().hex[:8]
    return {
        "kafka_bootstrap_servers": stack.broker.bootstrap_servers,
        "kafka_enable_idempotence": False,
        "kafka_client_id_suffix": "-" + tag,
        "kafka_group_prefix": f"t{tag}.",
        "kafka_session_timeout_ms": 2000,
        "kafka_heartbeat_interval_ms": 300,
        "outbox_idle_poll_seconds": 0.1,
    }


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Await check() until it returns something truthy (what another task or process does, seen from a test)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
