from functools import lru_cache

from typing import ClassVar

from pydantic import SecretStr

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

    required_secrets: ClassVar[tuple[str, ...]] = ("lookup_token_key", "payment_internal_token")


@lru_cache
def get_settings() -> OrderSettings:
    return OrderSettings()
