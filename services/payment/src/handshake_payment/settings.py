from functools import lru_cache
from typing import Literal

from pydantic import SecretStr, model_validator

from handshake_shared.settings import ServiceSettings

# localstripe accepts any key; a real deployment must set HANDSHAKE_STRIPE_API_KEY
DEV_STRIPE_KEY = "sk_test_handshake_dev_change_me"


class PaymentSettings(ServiceSettings):
    http_port: int = 8002

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

    @model_validator(mode="after")
    def _real_stripe_key_in_production(self) -> "PaymentSettings":
        if self.environment == "production" and self.stripe_api_key.get_secret_value() == DEV_STRIPE_KEY:
            raise ValueError("HANDSHAKE_STRIPE_API_KEY must be set to a real key in production")
        return self

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
