"""Console settings, read from HANDSHAKE_* environment variables.

The console holds staff bearer tokens in its session cookie, so it fails closed like the services: unless
HANDSHAKE_ENVIRONMENT is explicitly `development` or `test`, a missing or weak session secret, a missing
OIDC issuer or client, an issuer or public address that is not https, or a missing service URL stops it
before it listens, with every offending variable named at once.

The dashboard reads each service's /metrics from every replica: HANDSHAKE_CONSOLE_<SERVICE>_METRICS_URL
names a host that resolves to each pod's address, and the console asks every address. It defaults to the
service's URL, which is right wherever that name is one process (127.0.0.1 in development). In a cluster it
must name the service's headless Service (`http://order-pods:8080`): the ordinary Service's one virtual
address hands each scrape to whichever pod it picks, and pods' counters would be mixed."""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from handshake_shared.settings import RELAXED_ENVIRONMENTS, InsecureConfiguration, env_name, secret_problems, split_list

SERVICES = ("order", "payment", "inventory", "webhook-ingest")


def url_field(service: str) -> str:
    return f"console_{service.replace('-', '_')}_url"


def metrics_url_field(service: str) -> str:
    return f"console_{service.replace('-', '_')}_metrics_url"


class ServiceUrls(BaseSettings):
    """Where the four services answer: all the command line needs besides a token."""

    model_config = SettingsConfigDict(env_prefix="HANDSHAKE_", extra="ignore")

    environment: str = "production"
    console_order_url: str | None = None
    console_payment_url: str | None = None
    console_inventory_url: str | None = None
    console_webhook_ingest_url: str | None = None
    # one service call; a page waits for its slowest panel, so this bounds a page
    console_http_timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    @property
    def relaxed(self) -> bool:
        return self.environment in RELAXED_ENVIRONMENTS

    def service_urls(self) -> dict[str, str | None]:
        return {s: (getattr(self, url_field(s)) or None) for s in SERVICES}

    def url_problems(self) -> list[str]:
        problems = []
        for service, url in self.service_urls().items():
            if not url:
                problems.append(f"{env_name(url_field(service))} is missing")
            elif not url.startswith(("http://", "https://")):
                problems.append(f"{env_name(url_field(service))} must be an http(s):// URL")
        return problems


class ConsoleSettings(ServiceUrls):
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = 8005
    # the address staff type into the browser; the OIDC redirect URI is derived from it
    console_public_url: str = "http://127.0.0.1:8005"

    # Seals the session cookie (encrypted and authenticated). Several, comma-separated, for rotation: the
    # first seals, every one opens. In development an empty value gets a random secret per process.
    console_session_secrets: Annotated[list[SecretStr], NoDecode] = []
    # an idle browser is signed out after this long; a session never outlives its access token either
    console_session_max_age_seconds: int = Field(default=8 * 3600, ge=60)

    console_oidc_issuer: str | None = None
    console_oidc_client_id: str | None = None
    # a confidential client's secret; a public client relies on PKCE alone
    console_oidc_client_secret: SecretStr | None = None
    console_oidc_scopes: str = "openid profile"

    # the access token the issuer hands out is the services' bearer token: the console verifies it the way
    # they do (same issuer and audience) before it keeps it
    jwt_issuer: str = "handshake-dev"
    jwt_audience: str = "handshake"
    jwt_algorithms: Annotated[list[str], NoDecode] = ["EdDSA", "RS256"]
    jwt_leeway_seconds: int = Field(default=30, ge=0)

    # the dashboard: how often each service's /metrics is scraped, and how many scrapes each figure keeps
    console_metrics_interval_seconds: float = Field(default=15.0, gt=0)
    console_metrics_points: int = Field(default=120, ge=2, le=10_000)
    # where each service's every pod is found (module docstring); unset: the service's URL
    console_order_metrics_url: str | None = None
    console_payment_metrics_url: str | None = None
    console_inventory_metrics_url: str | None = None
    console_webhook_ingest_metrics_url: str | None = None
    # pods asked per service and scrape (a bound on the work one scrape can cause), and one pod's time to answer
    console_metrics_max_pods: int = Field(default=32, ge=1, le=256)
    console_metrics_pod_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("console_session_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: Any) -> Any:
        return split_list(value)

    @model_validator(mode="after")
    def _fail_closed(self) -> ConsoleSettings:
        problems = self.configuration_problems()
        if problems and not self.relaxed:
            raise InsecureConfiguration(problems)
        if not self.console_session_secrets:
            # development only (production refused above): sessions simply do not survive a restart
            self.console_session_secrets = [SecretStr(secrets.token_urlsafe(32))]
        return self

    def configuration_problems(self) -> list[str]:
        problems = secret_problems("console_session_secrets", self.console_session_secrets or None, required=True)
        if self.console_oidc_client_secret is not None:
            problems += secret_problems("console_oidc_client_secret", self.console_oidc_client_secret, required=False)
        if not self.console_oidc_issuer:
            problems.append(f"{env_name('console_oidc_issuer')} is missing")
        elif not self.console_oidc_issuer.startswith("https://"):
            problems.append(f"{env_name('console_oidc_issuer')} must be an https:// URL")
        if not self.console_oidc_client_id:
            problems.append(f"{env_name('console_oidc_client_id')} is missing")
        if "console_public_url" not in self.model_fields_set:
            problems.append(f"{env_name('console_public_url')} is missing")
        elif not self.console_public_url.startswith("https://"):
            # the session cookie is Secure: over plain HTTP the browser would never send it back
            problems.append(f"{env_name('console_public_url')} must be an https:// URL")
        problems += self.url_problems()
        for service in SERVICES:
            url = getattr(self, metrics_url_field(service))
            if url and not url.startswith(("http://", "https://")):
                problems.append(f"{env_name(metrics_url_field(service))} must be an http(s):// URL")
        return problems

    def metrics_urls(self) -> dict[str, str | None]:
        urls = self.service_urls()
        return {s: getattr(self, metrics_url_field(s)) or urls[s] for s in SERVICES}

    @property
    def redirect_uri(self) -> str:
        return self.console_public_url.rstrip("/") + "/auth/callback"

    @property
    def secure_cookies(self) -> bool:
        """Secure (and __Host- prefixed) cookies everywhere but a developer's plain-HTTP machine."""
        return self.environment != "development" or self.console_public_url.startswith("https://")


@lru_cache
def get_settings() -> ConsoleSettings:
    return ConsoleSettings()
