from functools import lru_cache

from pydantic import SecretStr

from handshake_shared.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    http_port: int = 8001
    payment_internal_url: str = "http://127.0.0.1:8002"
    # key for guest lookup tokens (HMAC of the order id): a token is never stored, only its hash
    lookup_token_key: SecretStr = SecretStr("dev-lookup-key-change-me")
    idempotency_retention_hours: int = 48


@lru_cache
def get_settings() -> OrderSettings:
    return OrderSettings()
