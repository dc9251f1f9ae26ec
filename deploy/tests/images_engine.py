"""The container engine the image tests drive: podman (rootful, runc) or docker, the same choice
deploy/images/build.sh makes."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "deploy" / "images" / "build.sh"
DOCKERFILE = ROOT / "deploy" / "images" / "Dockerfile"
SERVICES = {
    "order": "handshake_order",
    "payment": "handshake_payment",
    "inventory": "handshake_inventory",
    "webhook-ingest": "handshake_webhook_ingest",
}
# the operations console: built and locked down like the services, but no database, no broker, no `migrate`
CONSOLE = "console"
IMAGES = {**SERVICES, CONSOLE: "handshake_console"}
USER = "10001:10001"


def engine() -> str | None:
    chosen = os.environ.get("CONTAINER_ENGINE")
    if chosen:
        return chosen
    for candidate in ("podman", "docker"):
        if shutil.which(candidate):
            return candidate
    return None


def image_name(service: str) -> str:
    return f"{os.environ.get('IMAGE_PREFIX', 'localhost/handshake-')}{service}:{os.environ.get('IMAGE_TAG', 'dev')}"


def run_flags(name: str, network: str = "host") -> list[str]:
    """How Kubernetes runs these images (restricted pod security), on the host's network so that the
    containers reach the test session's embedded PostgreSQL and broker on 127.0.0.1."""
    flags = [
        "--name",
        name,
        "--network",
        network,
        "--user",
        USER,
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,size=64m,mode=1777",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    if engine() == "podman":
        # podman would also mount tmpfs on /run and /var/tmp; only /tmp is writable in a pod
        flags += ["--read-only-tmpfs=false", "--runtime", "runc"]
        # rootful podman raises nofile/nproc to its own defaults, which a host with lower hard limits refuses
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
        flags += ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]
    return flags


def container(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [engine() or "podman", *args]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def run(
    image: str,
    name: str,
    args: Sequence[str],
    *,
    env_file: Path | None = None,
    network: str = "host",
    extra: Sequence[str] = (),
    detach: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    flags = run_flags(name, network) + list(extra)
    if env_file is not None:
        flags += ["--env-file", str(env_file)]
    return container("run", *(["--detach"] if detach else []), *flags, image, *args, check=False, timeout=timeout)


def remove(name: str) -> None:
    container("rm", "--force", name, check=False)
