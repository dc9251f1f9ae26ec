"""The four services as separate OS processes on top of an embedded (or external) stack."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from handshake_devstack.broker import EmbeddedBroker
from handshake_devstack.processes import ManagedProcess, free_port, wait_until
from handshake_devstack.stack import EmbeddedStack
from handshake_devstack.tokens import DEV_ISSUER


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    database: str


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("order", "handshake_order", "handshake_order"),
    ServiceSpec("payment", "handshake_payment", "handshake_payment"),
    ServiceSpec("inventory", "handshake_inventory", "handshake_inventory"),
    ServiceSpec("webhook-ingest", "handshake_webhook_ingest", "handshake_webhook_ingest"),
)


class System:
    def __init__(
        self,
        stack: EmbeddedStack,
        project_root: Path,
        *,
        ports: dict[str, int] | None = None,
        extra_env: dict[str, dict[str, str]] | None = None,
        database_prefix: str = "",
        recreate_databases: bool = False,
        broker: EmbeddedBroker | None = None,
        register_webhook: bool = True,
        replicas: dict[str, int] | None = None,
    ) -> None:
        self.stack = stack
        # a system of its own broker shares nothing on the bus with another system on the same stack
        self.broker = broker or stack.broker
        self.register_webhook = register_webhook
        self.webhook_id = database_prefix.strip("_") or "handshake"
        # each system on a shared stack logs to a folder of its own
        self.logs = stack.logs / database_prefix.strip("_") if database_prefix else stack.logs
        self.root = project_root
        self.ports = ports or {s.name: free_port() for s in SERVICES}
        # only payment serves an internal API (the client secret, for order)
        self.internal_ports = {"payment": free_port()}
        # Replica 0 of a service is process `name` on ports[name]; replica i > 0 is process `name#i`. Replicas
        # share the service's database and its consumer groups: the broker splits each topic's partitions.
        self.replicas = {s.name: 1 for s in SERVICES} | (replicas or {})
        self.replica_ports = {
            n: [self.ports[n]] + [free_port() for _ in range(k - 1)]
            for n, k in self.replicas.items()
            if n in self.ports
        }
        self.replica_internal_ports = {
            n: [p] + [free_port() for _ in range(self.replicas.get(n, 1) - 1)] for n, p in self.internal_ports.items()
        }
        # the stand-in identity provider: services get its public key, tests and tools its tokens
        self.tokens = DEV_ISSUER
        self.extra_env = extra_env or {}
        self.database_prefix = database_prefix
        self.recreate = recreate_databases
        self.internal_token = secrets.token_urlsafe(32)
        self.lookup_key = secrets.token_urlsafe(32)
        self.processes: dict[str, ManagedProcess] = {}
        self.database_urls: dict[str, str] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def internal_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.internal_ports[service]}"

    def urls(self, service: str) -> list[str]:
        """Every replica's address, replica 0 first."""
        return [f"http://127.0.0.1:{port}" for port in self.replica_ports[service]]

    @staticmethod
    def replica_name(service: str, replica: int) -> str:
        return service if replica == 0 else f"{service}#{replica}"

    @property
    def webhook_url(self) -> str:
        return self.url("webhook-ingest") + "/webhooks/stripe"

    def env_for(self, spec: ServiceSpec, replica: int = 0) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "HANDSHAKE_ENVIRONMENT": "development",
                "HANDSHAKE_LOG_LEVEL": os.environ.get("HANDSHAKE_LOG_LEVEL", "INFO"),
                "HANDSHAKE_HTTP_PORT": str(self.replica_ports[spec.name][replica]),
                "HANDSHAKE_DATABASE_URL": self.database_urls[spec.name],
                "HANDSHAKE_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
                "HANDSHAKE_KAFKA_ENABLE_IDEMPOTENCE": "false",
                "HANDSHAKE_KAFKA_PARTITIONS": str(self.broker.partitions),
                # the embedded broker makes a joining member wait half the session timeout
                "HANDSHAKE_KAFKA_SESSION_TIMEOUT_MS": "6000",
                # the embedded broker forgets its topics on restart: notice their re-creation soon
                "HANDSHAKE_KAFKA_METADATA_MAX_AGE_MS": "5000",
                "HANDSHAKE_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
                # the embedded broker holds an empty fetch for the full wait even when data arrives
                "HANDSHAKE_KAFKA_FETCH_MAX_WAIT_MS": os.environ.get("HANDSHAKE_KAFKA_FETCH_MAX_WAIT_MS", "50"),
                "HANDSHAKE_JWT_PUBLIC_KEY": self.tokens.public_pem,
                "HANDSHAKE_JWT_ISSUER": self.tokens.issuer,
                "HANDSHAKE_JWT_AUDIENCE": self.tokens.audience,
                # order's credential for payment's internal API, and the list payment accepts
                "HANDSHAKE_PAYMENT_INTERNAL_TOKEN": self.internal_token,
                "HANDSHAKE_INTERNAL_API_TOKENS": self.internal_token,
                "HANDSHAKE_PAYMENT_INTERNAL_URL": self.internal_url("payment"),
                "HANDSHAKE_LOOKUP_TOKEN_KEY": self.lookup_key,
                # one address drives every buyer here (the bench, stock races); the limits have tests of their own
                "HANDSHAKE_RATE_LIMITS_ENABLED": "false",
                "HANDSHAKE_STRIPE_API_KEY": self.stack.stripe.api_key,
                "HANDSHAKE_STRIPE_API_BASE": self.stack.stripe.api_base,
                "HANDSHAKE_STRIPE_WEBHOOK_SECRETS": self.stack.stripe.webhook_secret,
            }
        )
        if spec.name in self.internal_ports:
            env["HANDSHAKE_INTERNAL_HTTP_PORT"] = str(self.replica_internal_ports[spec.name][replica])
        if spec.name == "order":
            # order takes one payment address (a Service balances it in a cluster): replica i asks payment
            # replica i mod P, which spreads the client-secret reads without a balancer here
            payment = self.replica_internal_ports["payment"]
            env["HANDSHAKE_PAYMENT_INTERNAL_URL"] = f"http://127.0.0.1:{payment[replica % len(payment)]}"
        if replica > 0:
            # Alembic takes no lock: replica 0 migrates, the others wait for its schema as pods wait for the job
            env["HANDSHAKE_MIGRATE_ON_START"] = "false"
            env["HANDSHAKE_KAFKA_CLIENT_ID_SUFFIX"] = f"-{replica}"
        env.update(self.extra_env.get(spec.name, {}))
        return env

    def start(self, timeout: float = 60.0) -> None:
        for spec in SERVICES:
            self.database_urls[spec.name] = self.stack.postgres.create_database(
                self.database_prefix + spec.database, recreate=self.recreate
            )
        try:
            for spec in SERVICES:
                self.start_service(spec.name, wait=False)
            for spec in SERVICES:
                self.wait_ready(spec.name, timeout)
            extra = [(s.name, i) for s in SERVICES for i in range(1, self.replicas.get(s.name, 1))]
            for name, i in extra:
                self.start_service(name, wait=False, replica=i)
            for name, i in extra:
                self.wait_ready(name, timeout, replica=i)
            if self.register_webhook:
                self.stack.stripe.register_webhook(self.webhook_url, webhook_id=self.webhook_id)
        except BaseException:
            self.stop()
            raise

    def spec(self, name: str) -> ServiceSpec:
        return next(s for s in SERVICES if s.name == name)

    def start_service(self, name: str, *, wait: bool = True, timeout: float = 60.0, replica: int = 0) -> None:
        spec = self.spec(name)
        key = self.replica_name(spec.name, replica)
        process = ManagedProcess(
            key,
            [sys.executable, "-m", spec.module, "serve"],
            log_path=self.logs / f"{key}.log",
            env=self.env_for(spec, replica),
            cwd=self.root,
        )
        process.start()
        self.processes[key] = process
        if wait:
            self.wait_ready(name, timeout, replica=replica)

    def wait_ready(self, name: str, timeout: float, *, replica: int = 0) -> None:
        key = self.replica_name(name, replica)
        process = self.processes[key]
        url = self.urls(name)[replica]

        def ready() -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, timeout, f"service {key}", process.proc)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n--- last lines of {key}.log ---\n{process.tail()}") from None

    def freeze(self) -> None:
        """SIGSTOP every service: no request, relay or consumer runs until thaw()."""
        for process in self.processes.values():
            if process.proc is not None:
                process.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for process in self.processes.values():
            if process.proc is not None:
                process.proc.send_signal(signal.SIGCONT)

    def stop_service(self, name: str) -> None:
        self.processes[name].stop()

    def scale(self, name: str, count: int, timeout: float = 60.0) -> None:
        """On a running system: start or stop replicas 1.. of `name` until it has `count` (replica 0 stays)."""
        count = max(count, 1)
        ports, internal = self.replica_ports[name], self.replica_internal_ports.get(name)
        for i in range(count, len(ports)):
            self.processes.pop(self.replica_name(name, i)).stop()
        del ports[count:]
        if internal is not None:
            del internal[count:]
        added = range(len(ports), count)
        for i in added:
            ports.append(free_port())
            if internal is not None:
                internal.append(free_port())
            self.start_service(name, wait=False, replica=i)
        self.replicas[name] = count
        for i in added:
            self.wait_ready(name, timeout, replica=i)

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        self.processes.clear()


def wait_for(predicate, timeout: float, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll predicate() until it returns something truthy; return that value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s (last value: {last!r})")
