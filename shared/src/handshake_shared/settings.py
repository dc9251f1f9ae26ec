"""Settings common to every service, read from HANDSHAKE_* environment variables.

Secrets and security settings fail closed: unless HANDSHAKE_ENVIRONMENT is explicitly `development` or
`test`, a service refuses to start when a secret is missing, is a value that ever shipped as a development
default, or is shorter than MIN_SECRET_BYTES, and when a security setting would leave a door open (plaintext
Kafka, a JWKS fetched over plain HTTP, no way to verify tokens). Every offending variable is named at once."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

RELAXED_ENVIRONMENTS = frozenset({"development", "test"})

# 256 bits: the strength of the HMACs and tokens these secrets protect
MIN_SECRET_BYTES = 32

# every value that was ever a default somewhere in this project, or that the development stack writes:
# public, so never acceptable where real money moves
KNOWN_DEVELOPMENT_SECRETS = frozenset(
    {
        "dev-jwt-key-change-me-not-for-production",
        "dev-internal-token-change-me",
        "dev-lookup-key-change-me",
        "sk_test_handshake_dev_change_me",
        "whsec_dev-webhook-secret-change-me",
        "postgresql://postgres@127.0.0.1:5432/postgres",
    }
)

DEVELOPMENT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class InsecureConfiguration(ValueError):
    """Raised while settings are read; `problems` names each offending variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("refusing to start: " + "; ".join(problems))
        self.problems = problems


def split_list(value: Any) -> Any:
    """HANDSHAKE_X="a,b" -> ["a", "b"]: lists of secrets (rotation) come from one variable."""
    if isinstance(value, str | SecretStr):
        value = (value.get_secret_value() if isinstance(value, SecretStr) else value).split(",")
    if isinstance(value, list | tuple):
        items = [v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value]
        return [s.strip() for s in items if s.strip()]
    return value


def env_name(field: str) -> str:
    return "HANDSHAKE_" + field.upper()


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HANDSHAKE_", extra="ignore")

    # fail closed: anything but an explicit development or test environment gets every check
    environment: str = "production"
    log_level: str = "INFO"
    # 0.0.0.0 in containers (probes and the Service reach the pod's address); loopback on a developer machine
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # a second listener for service-to-service APIs (/internal/...), which the public port refuses;
    # None: this service serves no internal API
    internal_http_port: int | None = None
    # request bodies above this are refused with 413 on every route (the Stripe webhook has its own limit);
    # a catalogue upsert of a thousand products fits, and nothing larger is ever held in memory
    http_max_body_bytes: int = Field(default=1_048_576, gt=0)

    database_url: SecretStr = SecretStr(DEVELOPMENT_DATABASE_URL)
    # connections per process, opened as needed and kept; a transaction beyond them waits for one (30 s)
    db_pool_size: int = Field(default=20, ge=1)
    # server-side limits set on every connection, in milliseconds (0: off). The idle-in-transaction limit
    # must stay above the outbox relay's longest round (it holds its transaction while the broker acks).
    db_statement_timeout_ms: int = Field(default=15_000, ge=0)
    db_lock_timeout_ms: int = Field(default=5_000, ge=0)
    db_idle_in_transaction_timeout_ms: int = Field(default=60_000, ge=0)
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
    # A consumer takes up to this many messages at once, handles them one by one (each in its own
    # transaction, in partition order) and commits the batch's offsets once, after the last one's commit.
    # Bounded so that a batch of slow messages stays far inside max.poll.interval (5 minutes).
    kafka_max_batch_records: int = Field(default=50, ge=1, le=500)
    # how long a consumer waits for a batch when nothing is buffered (and then pauses as long again)
    kafka_batch_wait_ms: int = Field(default=25, ge=1, le=1000)
    # how soon a consumer notices new topics or partitions (and re-balances onto them)
    kafka_metadata_max_age_ms: int = 30_000
    # TLS and SASL for every client (producer, consumers, admin). Each service has a principal of its own.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # the cluster CA (Strimzi: <cluster>-cluster-ca-cert, ca.crt); a client certificate only for mutual TLS
    kafka_ssl_ca_file: str | None = None
    kafka_ssl_cert_file: str | None = None
    kafka_ssl_key_file: str | None = None
    # plaintext Kafka outside development must be asked for by name (e.g. a mesh that encrypts already)
    kafka_allow_plaintext: bool = False

    outbox_idle_poll_seconds: float = 0.5
    outbox_batch_size: int = 200
    # a row the broker refuses for what it is (too large, unknown topic, not authorised) holds back only its
    # own key, retried with backoff up to the maximum, and is parked after this many refusals until an admin
    # releases it; a broker outage counts for nothing here
    outbox_max_attempts: int = Field(default=10, ge=1)
    outbox_retry_max_backoff_seconds: float = Field(default=60.0, gt=0)
    # a key whose send is still unanswered after this long stops holding up the round; its answer is
    # collected in a later round, and nothing of that key is sent meanwhile
    outbox_slow_send_seconds: float = Field(default=2.0, gt=0)
    consumer_max_attempts: int = 5
    consumer_initial_backoff_seconds: float = 0.2
    consumer_max_backoff_seconds: float = 5.0
    # a message that fails only because the database or the provider cannot be reached is left on the broker
    # and comes again; after this many such rounds (about an hour at the default backoff) it is dead-lettered
    # and alerted. While the database itself is down nothing can be dead-lettered, so it keeps waiting.
    consumer_max_deferrals: int = Field(default=400, ge=1)

    # Retention: one background loop per process deletes what nobody needs any more, in batches of
    # retention_batch_size rows, each batch its own short transaction; 0 turns a job (or the loop) off.
    retention_interval_seconds: float = Field(default=600, ge=0)
    retention_batch_size: int = Field(default=1000, ge=1, le=100_000)
    # published outbox rows (never unpublished or parked ones): the broker has them
    outbox_retention_hours: int = Field(default=72, ge=0)
    # consumed event ids. Safe once older than anything the broker can still redeliver: keep this above the
    # longest retention of every consumed topic (the saga topics keep 7 days)
    inbox_retention_days: int = Field(default=14, ge=0)
    # dead letters an admin has redriven (resolved); open ones are kept whatever their age
    dead_letter_retention_days: int = Field(default=30, ge=0)

    # Bearer tokens of customers and staff are signed by an identity provider with an asymmetric key;
    # services only verify. The keys come from a JWKS URL, or a file (PEM public key or JWKS JSON), or
    # the PEM text itself (HANDSHAKE_JWT_PUBLIC_KEY, handy for secret stores that inject values).
    jwt_jwks_url: str | None = None
    jwt_public_key_file: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = ["EdDSA", "RS256"]
    jwt_issuer: str = "handshake-dev"
    jwt_audience: str = "handshake"
    # a token that lives longer than this is refused whatever its exp says: a leaked token ages out
    jwt_max_lifetime_seconds: int = Field(default=3600, gt=0)
    jwt_leeway_seconds: int = Field(default=30, ge=0)

    # secrets this service cannot run without, and optional ones checked only when set; subclasses extend
    required_secrets: ClassVar[tuple[str, ...]] = ()
    optional_secrets: ClassVar[tuple[str, ...]] = ()

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        # HS256 would put a signing key in every service; "none" would need none at all
        allowed = {"EdDSA", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384"}
        wrong = [a for a in value if a not in allowed]
        if wrong or not value:
            raise ValueError(f"HANDSHAKE_JWT_ALGORITHMS must name asymmetric algorithms from {sorted(allowed)}")
        return value

    @field_validator("kafka_security_protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        if value.upper() not in KAFKA_SECURITY_PROTOCOLS:
            raise ValueError(f"HANDSHAKE_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}")
        return value.upper()

    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _known_mechanism(cls, value: str) -> str:
        if value.upper() not in KAFKA_SASL_MECHANISMS:
            raise ValueError(f"HANDSHAKE_KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}")
        return value.upper()

    @property
    def relaxed(self) -> bool:
        """True only in an explicit development or test environment."""
        return self.environment in RELAXED_ENVIRONMENTS

    @model_validator(mode="after")
    def _fail_closed(self) -> ServiceSettings:
        problems = self.configuration_problems()
        if problems and not self.relaxed:
            raise InsecureConfiguration(problems)
        return self

    def configuration_problems(self) -> list[str]:
        """Every reason this configuration is not fit to run outside development, one per variable."""
        problems: list[str] = []
        for name in self.required_secrets:
            problems += secret_problems(name, self._given(name), required=True)
        for name in self.optional_secrets:
            problems += secret_problems(name, self._given(name), required=False)
        problems += database_url_problems(self.database_url if "database_url" in self.model_fields_set else None)
        if not (self.jwt_jwks_url or self.jwt_public_key_file or self.jwt_public_key):
            problems.append(
                "HANDSHAKE_JWT_JWKS_URL / HANDSHAKE_JWT_PUBLIC_KEY_FILE / HANDSHAKE_JWT_PUBLIC_KEY is missing "
                "(no key to verify tokens with)"
            )
        if self.jwt_jwks_url and not self.jwt_jwks_url.startswith("https://"):
            problems.append(f"{env_name('jwt_jwks_url')} must be an https:// URL")
        problems += self._kafka_problems()
        return problems

    def _given(self, name: str) -> Any:
        """The value set by the environment or the caller; None when only the development default is there."""
        return getattr(self, name) if name in self.model_fields_set else None

    def _kafka_problems(self) -> list[str]:
        problems: list[str] = []
        protocol = self.kafka_security_protocol
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and not self.kafka_allow_plaintext:
            problems.append(
                f"{env_name('kafka_security_protocol')}={protocol} sends events unencrypted "
                "(use SSL or SASL_SSL, or set HANDSHAKE_KAFKA_ALLOW_PLAINTEXT=true on purpose)"
            )
        if protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism == "PLAIN":
                # PLAIN sends the password itself to the broker; SCRAM proves it without sending it
                problems.append(
                    f"{env_name('kafka_sasl_mechanism')}=PLAIN sends the password to the broker (use SCRAM-SHA-512)"
                )
            if not self.kafka_sasl_username:
                problems.append(f"{env_name('kafka_sasl_username')} is missing")
            problems += secret_problems("kafka_sasl_password", self.kafka_sasl_password, required=True)
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            problems.append("HANDSHAKE_KAFKA_SSL_CERT_FILE and HANDSHAKE_KAFKA_SSL_KEY_FILE go together")
        return problems


def secret_problems(name: str, value: SecretStr | list[SecretStr] | None, *, required: bool) -> list[str]:
    values = value if isinstance(value, list) else ([] if value is None else [value])
    values = [v for v in values if v.get_secret_value()]
    if not values:
        return [f"{env_name(name)} is missing"] if required else []
    problems = []
    for v in values:
        secret = v.get_secret_value()
        if secret in KNOWN_DEVELOPMENT_SECRETS:
            problems.append(f"{env_name(name)} is a known development value")
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            problems.append(f"{env_name(name)} is shorter than {MIN_SECRET_BYTES} bytes")
    return problems


def database_url_problems(value: SecretStr | None) -> list[str]:
    # the password inside is the operator's (CloudNativePG generates it); its length is not ours to judge
    if value is None or not value.get_secret_value():
        return [f"{env_name('database_url')} is missing"]
    if value.get_secret_value() in KNOWN_DEVELOPMENT_SECRETS:
        return [f"{env_name('database_url')} is a known development value"]
    return []


class MigrationSettings(BaseSettings):
    """What `migrate` needs and nothing more: a migration job holds only the database credential."""

    model_config = SettingsConfigDict(env_prefix="HANDSHAKE_", extra="ignore")

    environment: str = "production"
    log_level: str = "INFO"
    database_url: SecretStr = SecretStr(DEVELOPMENT_DATABASE_URL)

    @model_validator(mode="after")
    def _fail_closed(self) -> MigrationSettings:
        given = self.database_url if "database_url" in self.model_fields_set else None
        if self.environment not in RELAXED_ENVIRONMENTS and (problems := database_url_problems(given)):
            raise InsecureConfiguration(problems)
        return self
