"""The side-by-side table `make bench` prints: Handshake and the reference at each level, and the ratio."""

from __future__ import annotations

from typing import Any

COUNTS = (
    ("sql_round_trips", "SQL round trips (probe)"),
    ("sql_round_trips_prepare", "  of which prepares"),
    ("sql_round_trips_simple", "  of which BEGIN/COMMIT/ROLLBACK ..."),
    ("sql_transactions", "SQL transactions (pg_stat_database)"),
    ("sql_rollbacks", "  of which rolled back"),
    ("db_connections_opened", "new PostgreSQL connections"),
    ("kafka_produced", "Kafka messages produced (outbox)"),
    ("kafka_consumed_applied", "Kafka messages consumed: applied"),
    ("kafka_consumed_duplicate", "  duplicate"),
    ("kafka_consumed_ignored", "  ignored"),
    ("kafka_consumed_dead_lettered", "  dead-lettered"),
    ("kafka_offset_commits", "Kafka offset commits (probe)"),
    ("http_requests_served", "HTTP requests served (probe)"),
    ("http_requests_from_driver", "HTTP requests sent by the driver"),
)
LATENCIES = (
    ("checkout_response", "checkout response"),
    ("time_to_client_secret", "time to client secret"),
    ("webhook_to_paid", "webhook to paid (server)"),
    ("end_to_end_client", "end to end (client)"),
    ("end_to_end_server", "end to end (server)"),
)


def ratio(handshake: dict[str, Any], reference: dict[str, Any] | None) -> float | None:
    ref = (reference or {}).get("system_cpu_ms_per_order")
    if not ref:
        return None
    return round(handshake["cpu_ms_per_checkout"] / ref, 1)


def _pcts(p: dict[str, float]) -> str:
    if not p:
        return "-"
    return f"p50 {p['p50_ms']:>7.1f}  p95 {p['p95_ms']:>7.1f}  p99 {p['p99_ms']:>7.1f}  max {p['max_ms']:>7.1f}"


def print_level(level: dict[str, Any]) -> None:
    hs, ref = level["handshake"], level.get("reference")
    r = ratio(hs, ref)
    print(f"\n=== concurrency {hs['concurrency']}, {hs['checkouts']} checkouts "
          f"({hs['completed']} completed, {hs['failed']} failed) ===")  # fmt: skip
    ref_ok = ref is not None and "error" not in ref
    print(f"{'':36}{'Handshake':>12}{'reference':>12}")
    print(f"{'CPU ms per checkout':36}{hs['cpu_ms_per_checkout']:>12.1f}"
          f"{ref['system_cpu_ms_per_order'] if ref_ok else '-':>12}")  # fmt: skip
    print(f"{'orders/s':36}{hs['throughput_orders_per_second']:>12.2f}{ref['orders_per_s'] if ref_ok else '-':>12}")
    print(f"{'  of which the idle background':36}{hs['cpu_ms_per_checkout_idle_background']:>12.1f}")
    print(f"ratio Handshake / reference (CPU per checkout): {r if r is not None else 'unavailable'}")
    if ref is not None and not ref_ok:
        print(f"reference: {ref['error']}")
    print("Handshake latency (ms):")
    for key, label in LATENCIES:
        print(f"  {label:30}{_pcts(hs.get(key, {}))}")
    if ref_ok:
        print("reference latency (ms):")
        for key in ("checkout_ms", "e2e_ms"):
            print(f"  {key:30}" + "  ".join(f"{k} {v:>7.1f}" for k, v in ref.get(key, {}).items()))
    print("Handshake CPU ms per checkout by process: "
          + ", ".join(f"{n} {v}" for n, v in hs["cpu_ms_per_checkout_by_process"].items()))  # fmt: skip
    print("Handshake per checkout (total; by service):")
    counts = hs["per_checkout"]
    for key, label in COUNTS:
        row = counts.get(key)
        if row is None:
            print(f"  {label:40}{'unavailable':>9}")
            continue
        detail = ", ".join(f"{s} {v}" for s, v in row.items() if s != "total" and v)
        print(f"  {label:40}{row['total']:>9}  {detail}")
    if hs["first_failures"]:
        print("first failures:", *hs["first_failures"], sep="\n  ")


def print_summary(levels: list[dict[str, Any]]) -> None:
    print("\n=== summary ===")
    print(f"{'c':>4}{'HS cpu ms':>11}{'ref cpu ms':>12}{'ratio':>8}{'HS ord/s':>10}{'ref ord/s':>11}"
          f"{'HS w2p p99':>12}")  # fmt: skip
    for level in levels:
        hs, ref = level["handshake"], level.get("reference") or {}
        r = ratio(hs, ref)
        print(f"{hs['concurrency']:>4}{hs['cpu_ms_per_checkout']:>11.1f}{ref.get('system_cpu_ms_per_order', '-'):>12}"
              f"{r if r is not None else '-':>8}{hs['throughput_orders_per_second']:>10.2f}"
              f"{ref.get('orders_per_s', '-'):>11}{hs.get('webhook_to_paid', {}).get('p99_ms', '-'):>12}")  # fmt: skip
