from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

from pydantic import Field, SecretStr, model_validator

from handshake_shared.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    http_port: int = 8001
    # payment's internal listener, and order's own credential for it (not a staff token, not shared)
    payment_internal_url: str = "http://127.0.0.1:9002"
    payment_internal_token: SecretStr = SecretStr("dev-internal-token-change-me")
    # key for guest lookup tokens (HMAC of the order id): whoever holds it can read any guest order,
    # so outside development it must be a real secret; a token is never stored, only its hash
    lookup_token_key: SecretStr = SecretStr("dev-lookup-key-change-me")
    # idempotency keys are kept at least this long (the promise to clients is 24 h)
    idempotency_retention_hours: int = 48
    idempotency_purge_interval_seconds: float = 3600
    # the largest refund (minor units) role "support" may grant; "finance" has no limit
    support_refund_limit: int = 10_000
    # stuck orders: a draft with no stock answer is re-driven; a long payment_pending is flagged
    stuck_draft_after_seconds: int = 300
    stuck_payment_pending_after_seconds: int = 1800
    # paid but no answer from inventory (commit or commit_failed): money held, nothing moving
    stuck_paid_after_seconds: int = 600
    stuck_scan_interval_seconds: float = 60

    # payment requests one order may make (the first and the customer's retries); each is a new PaymentIntent
    max_payment_attempts_per_order: int = Field(default=5, ge=1)
    # Stock held per order, and for how long. A guest's order holds its stock only briefly until the payment
    # session is opened (somebody is about to pay), then for the full checkout hold from placement; a
    # signed-in customer's order holds it for the full time at once. Inventory's
    # HANDSHAKE_RESERVATION_TTL_SECONDS is the ceiling of both.
    max_units_per_order: int = Field(default=100, ge=1, le=100_000)
    guest_hold_seconds: int = Field(default=180, ge=1)
    checkout_hold_seconds: int = Field(default=900, ge=1)
    # units one holder (a signed-in customer, or a guest's client address) may hold at once across its unpaid
    # orders; an abuse limit like the rates below, so off with them
    max_units_held_per_holder: int = Field(default=300, ge=1)

    # requests one replica lets wait for an order change (GET /v1/orders/{id}?wait_for_change=...); past it a
    # long-poll answers at once, so a client asks again rather than holding a connection nobody watches
    order_wait_max_waiters: int = Field(default=1000, ge=0)

    # off only where one address drives many buyers on purpose (the bench, stock races); refused elsewhere
    rate_limits_enabled: bool = True
    # Abuse limits, per replica (a gateway keeps its own): per client address and per signed-in customer,
    # as requests per minute with a burst. Checkout holds stock and creates a PaymentIntent; payment attempts
    # create PaymentIntents (card testing); lookups are where order ids and tokens would be guessed.
    checkout_per_minute_per_address: float = 20
    checkout_burst_per_address: int = 10
    checkout_per_minute_per_customer: float = 10
    checkout_burst_per_customer: int = 5
    payment_attempts_per_minute_per_address: float = 20
    payment_attempts_burst_per_address: int = 5
    payment_attempts_per_minute_per_customer: float = 10
    payment_attempts_burst_per_customer: int = 5
    lookups_per_minute_per_address: float = 120
    lookups_burst_per_address: int = 60
    # how many proxies in front of the service append to X-Forwarded-For (1 behind the gateway); 0: the peer
    trusted_proxy_hops: int = 0

    required_secrets: ClassVar[tuple[str, ...]] = ("lookup_token_key", "payment_internal_token")

    @model_validator(mode="after")
    def holds_are_consistent(self) -> OrderSettings:
        if self.max_units_held_per_holder < self.max_units_per_order:
            raise ValueError(
                "HANDSHAKE_MAX_UNITS_HELD_PER_HOLDER is below HANDSHAKE_MAX_UNITS_PER_ORDER: "
                "no order of the largest size could ever be placed"
            )
        if self.guest_hold_seconds > self.checkout_hold_seconds:
            raise ValueError("HANDSHAKE_GUEST_HOLD_SECONDS is longer than HANDSHAKE_CHECKOUT_HOLD_SECONDS")
        return self

    def configuration_problems(self) -> list[str]:
        problems = super().configuration_problems()
        if not self.rate_limits_enabled:
            problems.append(
                "HANDSHAKE_RATE_LIMITS_ENABLED=false turns the abuse limits off (development and tests only)"
            )
        return problems


@lru_cache
def get_settings() -> OrderSettings:
    return OrderSettings()
