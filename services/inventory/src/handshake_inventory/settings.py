from functools import lru_cache

from pydantic import Field

from handshake_shared.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    http_port: int = 8003
    # how long a reservation holds stock for an unpaid order (the saga's 15 minutes)
    reservation_ttl_seconds: int = Field(default=900, ge=1)
    # how often the sweeper looks for held reservations past expires_at, and how many it expires per
    # sweep before it looks again at once (a backlog drains in bounded transactions, never one huge one)
    expiry_sweep_interval_seconds: float = Field(default=5.0, gt=0)
    expiry_sweep_batch_size: int = Field(default=100, ge=1)
    # how often the held/overdue reservation gauges are recomputed from the database
    gauge_refresh_seconds: float = Field(default=15.0, gt=0)


@lru_cache
def get_settings() -> InventorySettings:
    return InventorySettings()
