"""localstripe, the stateful fake Stripe server, driven by the real stripe SDK through api_base."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import httpx

from handshake_devstack.processes import ManagedProcess, port_open, wait_until

WEBHOOK_ID = "handshake"


class StripeEmulator:
    def __init__(self, port: int, *, log_dir: Path) -> None:
        self.port = port
        self.api_key = "sk_test_handshake_" + secrets.token_hex(8)
        self.webhook_secret = "whsec_" + secrets.token_hex(24)
        self.process = ManagedProcess(
            "localstripe",
            [sys.executable, "-m", "handshake_devstack.localstripe_main", "--port", str(port)],
            log_path=log_dir / "stripe-emulator.log",
        )

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        proc = self.process.start()
        wait_until(lambda: port_open(self.port), 30, "stripe emulator", proc)

    def register_webhook(self, url: str, secret: str | None = None, *, webhook_id: str = WEBHOOK_ID) -> None:
        """Every registered endpoint receives every event; each system registers under its own id."""
        response = httpx.post(
            f"{self.api_base}/_config/webhooks/{webhook_id}",
            data={"url": url, "secret": secret or self.webhook_secret},
        )
        response.raise_for_status()

    def stop(self) -> None:
        self.process.stop()
