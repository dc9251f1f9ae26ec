from functools import lru_cache
from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from handshake_shared.settings import ServiceSettings, split_list

# only good for a developer machine whose emulator was registered with it; refused in production
DEV_WEBHOOK_SECRET = "whsec_dev-webhook-secret-change-me"


class WebhookIngestSettings(ServiceSettings):
    http_port: int = 8004
    # HANDSHAKE_STRIPE_WEBHOOK_SECRETS="whsec_new,whsec_old": during a rotation Stripe signs with both
    # endpoint secrets, and a delivery is accepted when any configured secret verifies it
    stripe_webhook_secrets: Annotated[list[SecretStr], NoDecode] = [SecretStr(DEV_WEBHOOK_SECRET)]
    # Stripe's own default: a signature older than this is a possible replay and refused
    webhook_tolerance_seconds: int = Field(default=300, gt=0)
    # Stripe events are a few KB; a megabyte leaves room for large invoices and stops memory abuse
    webhook_max_body_bytes: int = Field(default=1_048_576, gt=0)

    # The gap scan lists the provider's events through the API (HANDSHAKE_STRIPE_API_KEY /
    # HANDSHAKE_STRIPE_API_BASE, the names the payment service uses) and ingests any that no webhook
    # brought. Without a key it stays off (with a warning at start); 0 disables it.
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_timeout_seconds: float = Field(default=10.0, gt=0)
    gap_scan_interval_seconds: float = Field(default=300, ge=0)
    # where the very first scan starts; Stripe keeps events for 30 days
    gap_scan_initial_lookback_seconds: int = Field(default=3 * 24 * 3600, ge=0)
    # each scan re-lists this far behind its cursor: events of one second, or made visible late, are not missed
    gap_scan_overlap_seconds: int = Field(default=60, ge=0)
    # Retention (0 keeps for ever): a stored event loses its client secret, billing details and signature after
    # this many days, keeping ids, amounts, status and our metadata. Stripe keeps events for 30 days, so a
    # replay of a scrubbed event, forwarded unsigned, can still be confirmed with the provider until then.
    webhook_body_retention_days: int = Field(default=30, ge=0)
    # finished gap-scan records
    gap_scan_retention_days: int = Field(default=90, ge=0)

    required_secrets: ClassVar[tuple[str, ...]] = ("stripe_webhook_secrets",)
    optional_secrets: ClassVar[tuple[str, ...]] = ("stripe_api_key",)

    @field_validator("stripe_webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        return split_list(value)

    @model_validator(mode="after")
    def _at_least_one_secret(self) -> "WebhookIngestSettings":
        # even in development: without a secret no delivery could ever be verified
        if not self.stripe_webhook_secrets:
            raise ValueError("HANDSHAKE_STRIPE_WEBHOOK_SECRETS must name at least one webhook signing secret")
        return self


@lru_cache
def get_settings() -> WebhookIngestSettings:
    return WebhookIngestSettings()
