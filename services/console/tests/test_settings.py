"""The console fails closed like the services: outside development/test a missing or weak session secret, a
missing OIDC issuer or client, plain-HTTP addresses or a missing service URL stop it, each named."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from handshake_console.settings import ConsoleSettings
from handshake_shared.entrypoint import EX_CONFIG, read_settings
from handshake_shared.settings import InsecureConfiguration

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

GOOD: dict[str, Any] = {
    "environment": "production",
    "console_session_secrets": [SecretStr("k" * 48)],
    "console_oidc_issuer": "https://login.example.com",
    "console_oidc_client_id": "handshake-console",
    "console_public_url": "https://console.example.com",
    "console_order_url": "http://order.handshake.svc:8000",
    "console_payment_url": "http://payment.handshake.svc:8000",
    "console_inventory_url": "http://inventory.handshake.svc:8000",
    "console_webhook_ingest_url": "http://webhook-ingest.handshake.svc:8000",
}


def problems_of(**changes: Any) -> list[str]:
    with pytest.raises(ValidationError) as refused:
        ConsoleSettings(**changes) if changes.pop("nothing", False) else ConsoleSettings(**{**GOOD, **changes})
    cause = refused.value.errors()[0]["ctx"]["error"]
    assert isinstance(cause, InsecureConfiguration)
    return cause.problems


def test_a_complete_production_configuration_starts_with_secure_cookies() -> None:
    settings = ConsoleSettings(**GOOD)
    assert settings.secure_cookies and settings.redirect_uri == "https://console.example.com/auth/callback"


def test_nothing_configured_names_every_missing_variable() -> None:
    assert problems_of(nothing=True, environment="production") == [
        "HANDSHAKE_CONSOLE_SESSION_SECRETS is missing",
        "HANDSHAKE_CONSOLE_OIDC_ISSUER is missing",
        "HANDSHAKE_CONSOLE_OIDC_CLIENT_ID is missing",
        "HANDSHAKE_CONSOLE_PUBLIC_URL is missing",
        "HANDSHAKE_CONSOLE_ORDER_URL is missing",
        "HANDSHAKE_CONSOLE_PAYMENT_URL is missing",
        "HANDSHAKE_CONSOLE_INVENTORY_URL is missing",
        "HANDSHAKE_CONSOLE_WEBHOOK_INGEST_URL is missing",
    ]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"console_session_secrets": [SecretStr("short")]},
            "HANDSHAKE_CONSOLE_SESSION_SECRETS is shorter than 32 bytes",
        ),
        (
            {"console_session_secrets": [SecretStr("k" * 48), SecretStr("dev-jwt-key-change-me-not-for-production")]},
            "HANDSHAKE_CONSOLE_SESSION_SECRETS is a known development value",
        ),
        ({"console_oidc_issuer": "http://login.example.com"}, "HANDSHAKE_CONSOLE_OIDC_ISSUER must be an https:// URL"),
        (
            {"console_oidc_client_secret": SecretStr("tiny")},
            "HANDSHAKE_CONSOLE_OIDC_CLIENT_SECRET is shorter than 32 bytes",
        ),
        ({"console_public_url": "http://console.example.com"}, "HANDSHAKE_CONSOLE_PUBLIC_URL must be an https:// URL"),
        ({"console_payment_url": "payment:8000"}, "HANDSHAKE_CONSOLE_PAYMENT_URL must be an http(s):// URL"),
        (
            {"environment": "staging", "console_webhook_ingest_url": None},
            "HANDSHAKE_CONSOLE_WEBHOOK_INGEST_URL is missing",
        ),
    ],
)
def test_each_weakness_is_refused_by_name(changes: dict[str, Any], problem: str) -> None:
    assert problems_of(**changes) == [problem]


def test_development_runs_without_secrets_on_a_random_one() -> None:
    one, two = ConsoleSettings(environment="development"), ConsoleSettings(environment="development")
    assert one.console_session_secrets[0].get_secret_value() != two.console_session_secrets[0].get_secret_value()
    assert len(one.console_session_secrets[0].get_secret_value()) >= 32
    assert not one.secure_cookies


def test_the_process_exits_78_before_listening(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HANDSHAKE_ENVIRONMENT", "production")
    monkeypatch.setenv("HANDSHAKE_CONSOLE_SESSION_SECRETS", "too-short")
    with pytest.raises(SystemExit) as stopped:
        read_settings("handshake_console", ConsoleSettings)
    assert stopped.value.code == EX_CONFIG
    assert "HANDSHAKE_CONSOLE_SESSION_SECRETS is shorter than 32 bytes" in capsys.readouterr().err
