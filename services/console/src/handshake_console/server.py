"""The web console's process: settings checked before anything listens (exit 78 naming every problem, as the
services do), then one uvicorn server."""

from __future__ import annotations

import signal
import sys

import uvicorn

from handshake_console.app import create_app
from handshake_console.settings import ConsoleSettings
from handshake_shared.entrypoint import read_settings
from handshake_shared.logging import configure_logging


def main() -> None:
    settings = read_settings("handshake_console", ConsoleSettings)
    configure_logging("console", settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    # an orderly stop exits 0, so a supervisor can tell it from a crash
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    uvicorn.Server(config).run()
