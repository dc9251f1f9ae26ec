"""The edge gateway's nginx as a process of our own: render deploy/gateway/nginx.conf.template, check it
with `nginx -t`, run it in the foreground under a private prefix, stop it gracefully."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from handshake_devstack.processes import ManagedProcess, free_port, port_open, wait_until

TEMPLATE = Path(__file__).resolve().parents[1] / "gateway" / "nginx.conf.template"
VARIABLES = ("GATEWAY_LISTEN", "WEBHOOK_INGEST_UPSTREAM", "ORDER_UPSTREAM")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(template: str, values: Mapping[str, str]) -> str:
    """envsubst with an explicit variable list: only ${NAME} of the known names is replaced, nginx's own
    $variables are left alone, and a placeholder without a value is an error rather than an empty string."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in VARIABLES:
            raise ValueError(f"unknown placeholder ${{{name}}} in the gateway template")
        if not values.get(name):
            raise ValueError(f"no value for ${{{name}}}")
        return values[name]

    return _PLACEHOLDER.sub(substitute, template)


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx-light)")
    return found


class NginxGateway:
    def __init__(self, prefix: Path, *, webhook_ingest: str, order: str, port: int | None = None) -> None:
        self.prefix = prefix
        self.port = port or free_port()
        self.values = {
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "WEBHOOK_INGEST_UPSTREAM": webhook_ingest,
            "ORDER_UPSTREAM": order,
        }
        self.conf = prefix / "conf" / "nginx.conf"
        self.log_path = prefix / "logs" / "nginx.log"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        argv = [nginx_binary(), "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", "stderr"]
        if os.geteuid() == 0:
            # A root master hands requests to workers running as "nobody", who cannot enter a root-only
            # temp dir; unprivileged (as in production) there is no switch and nothing to say.
            argv += ["-g", "user root;"]
        return argv

    def write_config(self) -> None:
        for sub in ("conf", "logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render(TEMPLATE.read_text(), self.values))

    def check_config(self) -> None:
        result = subprocess.run([*self.argv(), "-t"], check=False, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"nginx -t refused the gateway config:\n{result.stderr}")

    def start(self, timeout: float = 15.0) -> None:
        self.write_config()
        self.check_config()
        # SIGQUIT: graceful stop (finish in-flight requests); SIGTERM would be nginx's fast stop
        self.process = ManagedProcess("gateway", self.argv(), log_path=self.log_path, stop_signal=signal.SIGQUIT)
        proc = self.process.start()
        try:
            wait_until(lambda: port_open(self.port), timeout, "nginx gateway", proc)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n--- nginx.log ---\n{self.process.tail()}") from None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)

    def access_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
