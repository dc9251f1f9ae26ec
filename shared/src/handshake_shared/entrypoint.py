"""`python -m handshake_<service> [serve|migrate]`: the same entrypoint for every service.

A configuration that is not fit to run stops the process before it opens a port or a connection, with
one log line naming every offending variable and exit status 78 (EX_CONFIG), so an orchestrator shows
the reason and does not mistake it for a crash worth retrying quickly."""

from __future__ import annotations

import json
import signal
import socket
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import jwt
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from handshake_shared.auth import verifier_for
from handshake_shared.logging import configure_logging
from handshake_shared.migrations import upgrade, wait_for_schema
from handshake_shared.settings import InsecureConfiguration, MigrationSettings, ServiceSettings

EX_CONFIG = 78

S = TypeVar("S")


def main(
    migrations_package: str,
    load_settings: Callable[[], ServiceSettings],
    create_app: Callable[[ServiceSettings], FastAPI],
) -> None:
    service = migrations_package.split(".")[0]
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command == "migrate":
        # a migration job holds the database credential and nothing else
        upgrade(migrations_package, read_settings(service, MigrationSettings).database_url.get_secret_value())
        return
    if command != "serve":
        raise SystemExit(f"usage: python -m {service} [serve|migrate], not {command!r}")
    settings = read_settings(service, load_settings)
    check_token_keys(service, settings)
    configure_logging(service.removeprefix("handshake_").replace("_", "-"), settings.log_level)
    if settings.migrate_on_start:
        upgrade(migrations_package, settings.database_url.get_secret_value())
    else:
        wait_for_schema(migrations_package, settings.database_url.get_secret_value())
    serve(create_app(settings), settings)


def read_settings(service: str, load: Callable[[], S]) -> S:
    try:
        return load()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, InsecureConfiguration):
                problems += cause.problems
            else:
                field = ".".join(str(part) for part in error["loc"])
                problems.append(f"HANDSHAKE_{field.upper()}: {error['msg']}" if field else error["msg"])
        refuse(service, problems)


def refuse(service: str, problems: list[str]) -> NoReturn:
    # logging may not be configured yet (it depends on the settings); one JSON line as the services log
    line = {
        "event": "refusing to start: configuration not fit to run",
        "service": service,
        "level": "critical",
        "problems": problems,
    }
    print(json.dumps(line), file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG)


def check_token_keys(service: str, settings: ServiceSettings) -> None:
    """Load the token verification keys now: an unreadable or malformed key file is a configuration error
    to see at start, not a failure of the first staff request."""
    try:
        verifier_for(settings)
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        refuse(service, [f"HANDSHAKE_JWT_PUBLIC_KEY_FILE / HANDSHAKE_JWT_PUBLIC_KEY cannot be loaded: {exc}"])


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """One server, one lifespan; a second socket when the service has an internal API (the app's
    InternalListener tells the two apart by the port a request arrived on)."""
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    sockets = [listening_socket(settings.http_host, settings.http_port)]
    if settings.internal_http_port is not None:
        sockets.append(listening_socket(settings.http_host, settings.internal_http_port))
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again against the handler it
    # found: with the default one the process would die by the signal after an orderly stop. An orderly
    # stop exits 0, so an orchestrator (and a test) can tell it from a crash.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    uvicorn.Server(config).run(sockets=sockets)
