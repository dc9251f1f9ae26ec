"""Which customer requests are rate limited, and by what: the abuse limits of the order API."""

from __future__ import annotations

from typing import Any

from handshake_order.settings import OrderSettings
from handshake_shared.auth import verifier_for
from handshake_shared.rate_limit import Limit, RouteLimit, subject_from_bearer

ORDER = r"/v1/orders/[^/]+"


def per_minute(rate: float, burst: int) -> Limit:
    return Limit(rate_per_second=rate / 60.0, burst=burst)


def abuse_limits(settings: OrderSettings) -> dict[str, Any]:
    """Keyword arguments for RateLimits: checkout and payment attempts per address and per customer,
    lookups (order, payment session) per address."""
    s = settings
    routes = [
        RouteLimit(
            "checkout",
            "POST",
            "/v1/checkout",
            per_minute(s.checkout_per_minute_per_address, s.checkout_burst_per_address),
            "address",
        ),
        RouteLimit(
            "checkout",
            "POST",
            "/v1/checkout",
            per_minute(s.checkout_per_minute_per_customer, s.checkout_burst_per_customer),
            "subject",
        ),
        RouteLimit(
            "payment-attempts",
            "POST",
            ORDER + "/payment-attempts",
            per_minute(s.payment_attempts_per_minute_per_address, s.payment_attempts_burst_per_address),
            "address",
        ),
        RouteLimit(
            "payment-attempts",
            "POST",
            ORDER + "/payment-attempts",
            per_minute(s.payment_attempts_per_minute_per_customer, s.payment_attempts_burst_per_customer),
            "subject",
        ),
        RouteLimit(
            "lookup", "GET", ORDER, per_minute(s.lookups_per_minute_per_address, s.lookups_burst_per_address), "address"
        ),
        RouteLimit(
            "lookup",
            "GET",
            ORDER + "/payment-session",
            per_minute(s.lookups_per_minute_per_address, s.lookups_burst_per_address),
            "address",
        ),
    ]
    return {
        "routes": routes,
        "trusted_proxy_hops": s.trusted_proxy_hops,
        "subject_of": subject_from_bearer(verifier_for(settings).verify),
    }
