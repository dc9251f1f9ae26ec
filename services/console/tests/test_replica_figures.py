"""How a figure is combined across a service's pods (domain/replicas.py): counters by each pod's own increase,
database gauges by their largest reading, the ack mean over every pod's observations."""

from __future__ import annotations

import pytest

from handshake_console.domain.replicas import (
    counter_increase,
    gauge_across_pods,
    mean_across_pods,
    pod_increase,
    remembered,
)

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

A, B, C = "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"


def test_two_pods_each_adding_3_checkouts_show_6() -> None:
    assert counter_increase({A: 10, B: 40}, {A: 13, B: 43}) == 6


def test_pods_with_different_totals_are_not_compared_with_each_other() -> None:
    # a single address alternating between pods read 40 then 13: a "restart" counting 13. Per pod it is 3 + 0.
    assert counter_increase({A: 10, B: 40}, {A: 13, B: 40}) == 3


def test_a_pod_restarting_shows_its_new_count_not_a_negative() -> None:
    assert pod_increase(120, 4) == 4
    assert counter_increase({A: 120, B: 50}, {A: 4, B: 52}) == 6


def test_a_new_pod_counts_from_its_second_scrape() -> None:
    # its first reading (here 500, counted before the console saw it) is its baseline, not an increase
    assert pod_increase(None, 500) is None
    assert counter_increase({A: 10}, {A: 12, C: 500}) == 2
    assert counter_increase({A: 12, C: 500}, {A: 12, C: 503}) == 3


def test_nothing_is_known_about_an_interval_no_answering_pod_was_scraped_before() -> None:
    assert counter_increase({}, {A: 5, B: 7}) is None
    assert counter_increase({A: 5}, {}) is None
    assert counter_increase({A: 5}, {A: 5}) == 0


def test_a_pod_that_missed_a_scrape_is_counted_once_when_it_answers_again() -> None:
    kept = remembered({A: 10, B: 20}, {A: 11}, present=[A, B])  # B still resolves but did not answer
    assert kept == {A: 11, B: 20}
    assert counter_increase(kept, {A: 11, B: 25}) == 5


def test_a_pod_that_disappeared_contributes_nothing_and_is_forgotten() -> None:
    kept = remembered({A: 10, B: 20}, {A: 11}, present=[A])
    assert kept == {A: 11}
    assert counter_increase({A: 10, B: 20}, {A: 11}) == 1


def test_a_gauge_reported_by_three_pods_is_not_tripled() -> None:
    assert gauge_across_pods({A: 4, B: 4, C: 4}) == 4
    # a pod that has not refreshed it yet shows an older value: the newest (largest) is the fact
    assert gauge_across_pods({A: 0, B: 7, C: 5}) == 7
    assert gauge_across_pods({}) is None


def test_the_ack_mean_is_total_seconds_over_total_count_not_a_mean_of_means() -> None:
    # pod A: 1 delivery of 1.0 s; pod B: 9 deliveries of 0.1 s -> 1.9 s / 10 = 0.19 s (a mean of means says 0.55)
    assert mean_across_pods({A: (1.0, 1), B: (0.9, 9)}) == 0.19
    assert mean_across_pods({A: (0.0, 0)}) == 0.0
    assert mean_across_pods({}) is None
