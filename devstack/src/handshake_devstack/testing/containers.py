"""testcontainers-backed stack, used only when Docker is available (HANDSHAKE_TEST_INFRA=containers).
It presents the same interface as the embedded stack: postgres.create_database/url, broker.bootstrap_servers,
stripe (the emulator still runs locally: there is no Stripe container)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from handshake_devstack.processes import free_port
from handshake_devstack.stripe_emulator import StripeEmulator
from handshake_shared.events import ALL_TOPICS
from handshake_shared.kafka import ensure_topics


@contextmanager
def container_stack(root: Path) -> Iterator[SimpleNamespace]:
    from sqlalchemy import create_engine, text
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16") as pg, KafkaContainer() as kafka:
        base = pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
        admin_url = base.rsplit("/", 1)[0]

        def create_database(name: str, *, recreate: bool = False) -> str:
            engine = create_engine(
                base.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT"
            )
            with engine.connect() as conn:
                if recreate:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
            engine.dispose()
            return f"{admin_url}/{name}"

        bootstrap = kafka.get_bootstrap_server()
        asyncio.run(ensure_topics(bootstrap, ALL_TOPICS, 6))
        stripe = StripeEmulator(free_port(), log_dir=root / "logs")
        stripe.start()
        try:
            yield SimpleNamespace(
                root=root,
                logs=root / "logs",
                postgres=SimpleNamespace(
                    create_database=create_database, url=lambda db="postgres": f"{admin_url}/{db}"
                ),
                broker=SimpleNamespace(bootstrap_servers=bootstrap, partitions=6),
                stripe=stripe,
            )
        finally:
            stripe.stop()
