"""Settings common to every service, read from HANDSHAKE_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# values that only make sense on a developer machine; refused when environment=production
DEV_PLACEHOLDERS = {"dev-jwt-key-change-me-not-for-production", "dev-internal-token-change-me"}


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HANDSHAKE_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    db_pool_size: int = 10
    # run Alembic to head before serving (off when a Kubernetes job or init container migrates)
    migrate_on_start: bool = True

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # on for real Kafka; the embedded broker has no InitProducerId, so the embedded stack turns it off
    kafka_enable_idempotence: bool = True
    kafka_partitions: int = 6
    kafka_client_id_suffix: str = ""
    # prepended to every consumer group id (environments sharing one cluster; isolated test runs)
    kafka_group_prefix: str = ""
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    # how long the broker may hold an empty fetch; a broker that does not answer early when data
    # arrives turns this into per-hop latency
    kafka_fetch_max_wait_ms: int = 500
    # how soon a consumer notices new topics or partitions (and re-balances onto them)
    kafka_metadata_max_age_ms: int = 30_000

    outbox_idle_poll_seconds: float = 0.5
    outbox_batch_size: int = 200
    consumer_max_attempts: int = 5
    consumer_initial_backoff_seconds: float = 0.2
    consumer_max_backoff_seconds: float = 5.0

    jwt_key: SecretStr = SecretStr("dev-jwt-key-change-me-not-for-production")
    jwt_issuer: str = "handshake-dev"
    jwt_audience: str = "handshake"
    # bearer token the services use on each other's internal HTTP API
    internal_token: SecretStr = SecretStr("dev-internal-token-change-me")

    @model_validator(mode="after")
    def _no_placeholders_in_production(self) -> ServiceSettings:
        if self.environment == "production":
            for name in ("jwt_key", "internal_token"):
                if getattr(self, name).get_secret_value() in DEV_PLACEHOLDERS:
                    raise ValueError(f"HANDSHAKE_{name.upper()} must be set to a real secret in production")
        return self
