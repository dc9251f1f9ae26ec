"""`python -m handshake_<service> [serve|migrate]`: the same entrypoint for every service."""

from __future__ import annotations

import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from handshake_shared.migrations import upgrade
from handshake_shared.settings import ServiceSettings


def main(migrations_package: str, settings: ServiceSettings, create_app: Callable[[ServiceSettings], FastAPI]) -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    url = settings.database_url.get_secret_value()
    if command == "migrate":
        upgrade(migrations_package, url)
        return
    if command != "serve":
        raise SystemExit(f"usage: python -m <service> [serve|migrate], not {command!r}")
    if settings.migrate_on_start:
        upgrade(migrations_package, url)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
