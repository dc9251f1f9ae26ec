"""The operations console for `make run`: the development OIDC issuer on a thread of this process (it signs with
the key the services trust) and the console as its own process, signing staff in against that issuer exactly
as against a real one."""

from __future__ import annotations

import os
import secrets
import sys

import httpx

from handshake_devstack.identity import DEV_USERS, IdentityServer
from handshake_devstack.processes import ManagedProcess, free_port, wait_until
from handshake_devstack.system import SERVICES, System

CLIENT_ID = "handshake-console"


class ConsoleProcess:
    def __init__(self, system: System, *, port: int | None = None, identity_port: int | None = None) -> None:
        self.system = system
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.identity = IdentityServer(identity_port or free_port(), {CLIENT_ID: [self.url + "/auth/callback"]})
        self.process: ManagedProcess | None = None

    @property
    def sign_in_hint(self) -> str:
        return "sign in as " + " / ".join(f"{u.subject} ({', '.join(u.roles)})" for u in DEV_USERS)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "HANDSHAKE_ENVIRONMENT": "development",
                "HANDSHAKE_HTTP_PORT": str(self.port),
                "HANDSHAKE_CONSOLE_PUBLIC_URL": self.url,
                "HANDSHAKE_CONSOLE_SESSION_SECRETS": secrets.token_urlsafe(32),
                "HANDSHAKE_CONSOLE_OIDC_ISSUER": self.identity.url,
                "HANDSHAKE_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
                "HANDSHAKE_JWT_ISSUER": self.system.tokens.issuer,
                "HANDSHAKE_JWT_AUDIENCE": self.system.tokens.audience,
                "HANDSHAKE_CONSOLE_METRICS_INTERVAL_SECONDS": "5",
                **{
                    f"HANDSHAKE_CONSOLE_{s.name.upper().replace('-', '_')}_URL": self.system.url(s.name)
                    for s in SERVICES
                },
            }
        )
        return env

    def start(self, timeout: float = 30.0) -> None:
        self.identity.start()
        self.process = ManagedProcess(
            "console",
            [sys.executable, "-m", "handshake_console", "serve"],
            log_path=self.system.logs / "console.log",
            env=self.env(),
            cwd=self.system.root,
        )
        self.process.start()

        def ready() -> bool:
            try:
                return httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, timeout, "console", self.process.proc)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n--- last lines of console.log ---\n{self.process.tail()}") from None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.identity.stop()
