"""Outside an explicit development or test environment a service refuses to start on a missing, known
development or short secret, naming each offending variable in one log line; a real configuration starts."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

import httpx
import pytest

from handshake_devstack.processes import free_port, wait_until
from handshake_devstack.tokens import DEV_ISSUER
from handshake_inventory.settings import InventorySettings
from handshake_order.settings import OrderSettings
from handshake_payment.settings import PaymentSettings
from handshake_shared.entrypoint import EX_CONFIG
from handshake_shared.settings import KNOWN_DEVELOPMENT_SECRETS, ServiceSettings
from handshake_webhook_ingest.settings import WebhookIngestSettings


def strong() -> str:
    return secrets.token_urlsafe(32)


# the secrets every service needs, then each service's own (optional ones are checked only when given)
COMMON_SECRETS = ("database_url", "kafka_sasl_password")
SERVICES: dict[str, tuple[type[ServiceSettings], tuple[str, ...]]] = {
    "handshake_order": (OrderSettings, ("lookup_token_key", "payment_internal_token")),
    "handshake_payment": (PaymentSettings, ("stripe_api_key", "stripe_webhook_secrets", "internal_api_tokens")),
    "handshake_inventory": (InventorySettings, ()),
    "handshake_webhook_ingest": (WebhookIngestSettings, ("stripe_webhook_secrets",)),
}
KINDS = ("missing", "development value", "short")


def production(own: tuple[str, ...]) -> dict[str, str]:
    """A configuration fit for production: every secret real, Kafka over SASL_SSL, tokens from a JWKS URL."""
    values = {
        "environment": "production",
        "database_url": f"postgresql://handshake:{strong()}@db.internal:5432/handshake",
        "jwt_jwks_url": "https://id.example.com/.well-known/jwks.json",
        "jwt_issuer": "https://id.example.com/",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_username": "handshake-service",
        "kafka_sasl_password": strong(),
        "kafka_ssl_ca_file": "/etc/handshake/kafka-ca/ca.crt",
    }
    for name in own:
        values[name] = ("whsec_" if "webhook" in name else "sk_live_" if "api_key" in name else "") + strong()
    return values


def spoil(values: dict[str, str], name: str, kind: str) -> dict[str, str]:
    spoiled = dict(values)
    if kind == "missing":
        del spoiled[name]
    elif kind == "development value":
        spoiled[name] = next(
            v for v in sorted(KNOWN_DEVELOPMENT_SECRETS) if ("postgresql" in v) == (name == "database_url")
        )
    else:
        spoiled[name] = "x" * 31
    return spoiled


def as_env(values: dict[str, str]) -> dict[str, str]:
    return {"HANDSHAKE_" + k.upper(): v for k, v in values.items()}


CASES = [
    (service, name, kind)
    for service, (_, own) in SERVICES.items()
    for name in COMMON_SECRETS + own
    for kind in KINDS
    # a database URL's strength is its password's, which the database operator generates
    if (name, kind) != ("database_url", "short")
]


@pytest.fixture(autouse=True)
def _no_test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # the pytest plugin marks in-process settings as the test environment; these tests are about production
    for name in list(os.environ):
        if name.startswith("HANDSHAKE_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("service", SERVICES)
def test_a_real_production_configuration_is_accepted(service: str) -> None:
    settings_class, own = SERVICES[service]
    settings = settings_class(**production(own))
    assert settings.configuration_problems() == []


@pytest.mark.parametrize(("service", "name", "kind"), CASES)
def test_each_bad_secret_is_refused_by_name(service: str, name: str, kind: str) -> None:
    settings_class, own = SERVICES[service]
    with pytest.raises(ValueError) as refused:
        settings_class(**spoil(production(own), name, kind))
    problems = refused.value.errors()[0]["ctx"]["error"].problems
    assert len(problems) == 1 and problems[0].startswith("HANDSHAKE_" + name.upper() + " ")
    assert {"missing": "missing", "development value": "known development", "short": "shorter"}[kind] in problems[0]


def test_the_defaults_are_refused_with_every_problem_named_at_once() -> None:
    with pytest.raises(ValueError) as refused:
        PaymentSettings()
    problems = refused.value.errors()[0]["ctx"]["error"].problems
    named = {p.split(" ")[0].split("=")[0] for p in problems}
    assert {
        "HANDSHAKE_DATABASE_URL",
        "HANDSHAKE_STRIPE_API_KEY",
        "HANDSHAKE_STRIPE_WEBHOOK_SECRETS",
        "HANDSHAKE_INTERNAL_API_TOKENS",
        "HANDSHAKE_JWT_JWKS_URL",
        "HANDSHAKE_KAFKA_SECURITY_PROTOCOL",
    } <= named


def test_security_settings_fail_closed_too() -> None:
    values = production(SERVICES["handshake_order"][1])
    for change, variable in (
        ({"kafka_security_protocol": "PLAINTEXT"}, "HANDSHAKE_KAFKA_SECURITY_PROTOCOL"),
        ({"jwt_jwks_url": "http://id.example.com/jwks.json"}, "HANDSHAKE_JWT_JWKS_URL"),
        ({"jwt_jwks_url": ""}, "HANDSHAKE_JWT_JWKS_URL"),
        ({"kafka_sasl_username": ""}, "HANDSHAKE_KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_mechanism": "PLAIN"}, "HANDSHAKE_KAFKA_SASL_MECHANISM"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "HANDSHAKE_KAFKA_SASL_MECHANISM"),
        ({"rate_limits_enabled": "false"}, "HANDSHAKE_RATE_LIMITS_ENABLED"),
    ):
        with pytest.raises(ValueError, match=variable):
            OrderSettings(**{**values, **change})
    # plaintext is possible, but only when asked for by name
    assert OrderSettings(**{**values, "kafka_security_protocol": "PLAINTEXT", "kafka_allow_plaintext": "true"})
    # and in development nothing stops a developer
    assert OrderSettings(environment="development").lookup_token_key


def start(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    return subprocess.run(
        [sys.executable, "-m", service], env={**clean, **env}, check=False, capture_output=True, text=True, timeout=60
    )


def test_each_service_process_refuses_to_start_naming_the_bad_secret() -> None:
    """The real entrypoint, once per secret of every service; the kind of damage rotates over the secrets
    (every combination is covered in-process above)."""
    kinds = cycle(KINDS)
    runs = []
    for service, (_, own) in SERVICES.items():
        for name, kind in zip(COMMON_SECRETS + own, kinds, strict=False):
            kind = "missing" if (name, kind) == ("database_url", "short") else kind
            runs.append((service, name, kind, as_env(spoil(production(own), name, kind))))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda run: start(run[0], run[3]), runs))
    for (service, name, kind, _), result in zip(runs, results, strict=True):
        assert result.returncode == EX_CONFIG, (service, name, kind, result.stderr[-2000:])
        [line] = [json.loads(text) for text in result.stderr.splitlines() if text.startswith("{")]
        assert line["level"] == "critical" and line["service"] == service
        assert [p.split(" ")[0] for p in line["problems"]] == ["HANDSHAKE_" + name.upper()], line


def test_a_token_key_file_that_cannot_be_read_stops_the_service_at_start(tmp_path) -> None:
    """Not the first staff request's problem: the key is loaded before the service listens."""
    values = production(SERVICES["handshake_inventory"][1])
    values.pop("jwt_jwks_url")
    garbage = tmp_path / "jwks.json"
    garbage.write_text("not a key")
    for path in (tmp_path / "missing.pem", garbage):
        result = start("handshake_inventory", as_env({**values, "jwt_public_key_file": str(path)}))
        assert result.returncode == EX_CONFIG, result.stderr[-2000:]
        [line] = [json.loads(text) for text in result.stderr.splitlines() if text.startswith("{")]
        assert line["problems"][0].startswith("HANDSHAKE_JWT_PUBLIC_KEY_FILE")


def test_each_service_starts_with_a_real_production_configuration(stack, tmp_path) -> None:
    """Production checks pass with real values and the service serves: migrations, database, broker, probes.
    The embedded broker speaks plaintext, which production accepts only when asked for by name."""
    processes = []
    try:
        for service, (_, own) in SERVICES.items():
            values = production(own)
            values.pop("jwt_jwks_url")
            port = free_port()
            values.update(
                {
                    "database_url": stack.postgres.create_database(f"prod_{service}_{uuid.uuid4().hex[:6]}"),
                    "jwt_public_key": DEV_ISSUER.public_pem,
                    "kafka_bootstrap_servers": stack.broker.bootstrap_servers,
                    "kafka_security_protocol": "PLAINTEXT",
                    "kafka_allow_plaintext": "true",
                    "kafka_enable_idempotence": "false",
                    "kafka_group_prefix": f"prod{uuid.uuid4().hex[:6]}.",
                    "http_port": str(port),
                    "internal_http_port": str(free_port()),
                    "stripe_api_base": stack.stripe.api_base,
                    "gap_scan_interval_seconds": "0",
                    "reconciliation_interval_seconds": "0",
                }
            )
            clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
            log = (tmp_path / f"{service}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", service], env={**clean, **as_env(values)}, stdout=log, stderr=subprocess.STDOUT
            )
            processes.append((service, port, proc))
        for service, port, proc in processes:

            def ready(port: int = port) -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, 60, service, proc)
    finally:
        for _, _, proc in processes:
            proc.terminate()
        for service, _, proc in processes:
            # SIGTERM is an orderly stop: consumers leave, the relay finishes, the process exits 0
            assert proc.wait(timeout=20) == 0, (service, (tmp_path / f"{service}.log").read_text()[-2000:])
