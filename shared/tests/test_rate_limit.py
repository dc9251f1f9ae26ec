"""Rate limits: a burst, then the rate; a refused request costs nothing; memory stays bounded."""

from __future__ import annotations

import pytest

from handshake_shared.rate_limit import KeyedRateLimiter, Limit, client_address

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_burst_then_the_rate_and_is_told_when_to_come_back() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(Limit(rate_per_second=2, burst=3), clock=clock)
    assert [limiter.hit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.hit("a")
    assert wait == pytest.approx(0.5)
    # another key is not affected
    assert limiter.hit("b") == 0.0
    clock.now += 0.5
    assert limiter.hit("a") == 0.0
    assert limiter.hit("a") == pytest.approx(0.5)


def test_refused_requests_do_not_push_the_door_further() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(Limit(rate_per_second=1, burst=1), clock=clock)
    assert limiter.hit("a") == 0.0
    for _ in range(100):
        assert limiter.hit("a") > 0
    clock.now += 1.0
    assert limiter.hit("a") == 0.0


def test_over_a_long_time_a_key_gets_exactly_the_rate() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(Limit(rate_per_second=5, burst=10), clock=clock)
    allowed = 0
    for _ in range(60 * 100):  # a minute of attempts every 10 ms
        allowed += limiter.hit("a") == 0.0
        clock.now += 0.01
    assert allowed == 10 + 5 * 60 - 1 or allowed == 10 + 5 * 60


def test_memory_is_bounded_and_idle_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(Limit(rate_per_second=1, burst=5), max_keys=100, clock=clock)
    for i in range(1000):
        limiter.hit(f"k{i}")
    assert len(limiter) <= 101
    clock.now += 60
    limiter.hit("fresh")
    assert len(limiter) == 1


def test_the_client_address_trusts_only_the_declared_proxy_hops() -> None:
    # without a trusted proxy the header is the client's own words
    assert client_address("10.0.0.7", "1.2.3.4", 0) == "10.0.0.7"
    # one gateway: its entry is the rightmost; what the client put to its left is ignored
    assert client_address("10.0.0.7", "6.6.6.6, 203.0.113.9", 1) == "203.0.113.9"
    assert client_address("10.0.0.7", "203.0.113.9", 1) == "203.0.113.9"
    assert client_address("10.0.0.7", None, 1) == "10.0.0.7"
    # two hops declared (load balancer + gateway)
    assert client_address("10.0.0.7", "6.6.6.6, 203.0.113.9, 10.1.1.1", 2) == "203.0.113.9"
