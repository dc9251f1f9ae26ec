from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from handshake_shared.settings import ServiceSettings, split_list

# localstripe accepts any key; a real deployment must set HANDSHAKE_STRIPE_API_KEY
DEV_STRIPE_KEY = "sk_test_handshake_dev_change_me"
DEV_WEBHOOK_SECRET = "whsec_dev-webhook-secret-change-me"
DEV_INTERNAL_TOKEN = "dev-internal-token-change-me"


class PaymentSettings(ServiceSettings):
    http_port: int = 8002
    # the client-secret API for order lives here, never on the public port
    internal_http_port: int | None = 9002
    # credentials a caller of the internal API may present (several during a rotation)
    internal_api_tokens: Annotated[list[SecretStr], NoDecode] = [SecretStr(DEV_INTERNAL_TOKEN)]
    # the webhook endpoint's signing secrets: a provider event is applied only when one of them verifies the
    # signature webhook-ingest received with it, so whoever can write to the topic cannot invent money
    stripe_webhook_secrets: Annotated[list[SecretStr], NoDecode] = [SecretStr(DEV_WEBHOOK_SECRET)]

    stripe_api_key: SecretStr = SecretStr(DEV_STRIPE_KEY)
    # None talks to api.stripe.com; the embedded stack points it at localstripe
    stripe_api_base: str | None = None
    # one Stripe HTTP request; the SDK retries network errors, 409 and 5xx with the same idempotency key
    stripe_timeout_seconds: float = 10.0
    stripe_max_network_retries: int = 2
    # manual: intents only authorize; the order asks for the capture (order.capture_requested) once stock
    # is committed, and a cancelled order releases the authorization instead of refunding a charge
    capture_method: Literal["automatic", "automatic_async", "manual"] = "automatic"
    # reconciliation with the provider: every this many seconds (0: only when finance/admin ask for a run),
    # looking at attempts and refunds left waiting for the provider longer than pending_after
    reconciliation_interval_seconds: float = 300.0
    reconciliation_pending_after_seconds: float = 120.0
    # finished reconciliation runs older than this many days are deleted (0: kept for ever)
    reconciliation_retention_days: int = Field(default=90, ge=0)
    # a staff read of an order's payments with live=true asks Stripe about at most this many attempts (the
    # newest), each given at most this long, so a slow provider slows the page down but never fails it
    admin_live_max_fetches: int = Field(default=10, ge=0, le=50)
    admin_live_fetch_timeout_seconds: float = Field(default=5.0, gt=0, le=30)

    required_secrets: ClassVar[tuple[str, ...]] = ("stripe_api_key", "stripe_webhook_secrets", "internal_api_tokens")

    @field_validator("internal_api_tokens", "stripe_webhook_secrets", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)

    @property
    def provider_call_lease_seconds(self) -> float:
        """How long one handler may own a provider call (creating an attempt's PaymentIntent, making a refund)
        before another may take over: longer than the SDK can spend on the call including its retries and
        their backoff."""
        return self.stripe_timeout_seconds * (self.stripe_max_network_retries + 1) + 10.0

    @property
    def intent_creation_lease_seconds(self) -> float:
        return self.provider_call_lease_seconds


@lru_cache
def get_settings() -> PaymentSettings:
    return PaymentSettings()
