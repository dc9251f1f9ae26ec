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
    # the reference figures when its run succeeded; a failed run shows its error instead
    ok: dict[str, Any] | None = ref if ref is not None and "error" not in ref else None
    print(
        f"\n=== concurrency {hs['concurrency']}, {hs['checkouts']} checkouts "
        f"({hs['completed']} completed, {hs['failed']} failed) ==="
    )
    print(f"{'':36}{'Handshake':>12}{'reference':>12}")
    print(
        f"{'CPU ms per checkout':36}{hs['cpu_ms_per_checkout']:>12.1f}"
        f"{ok['system_cpu_ms_per_order'] if ok else '-':>12}"
    )
    print(f"{'orders/s':36}{hs['throughput_orders_per_second']:>12.2f}{ok['orders_per_s'] if ok else '-':>12}")
    print(f"{'  of which the idle background':36}{hs['cpu_ms_per_checkout_idle_background']:>12.1f}")
    if cores := hs.get("cores_busy"):
        print(
            f"cores busy during the run: Handshake {cores['handshake']}, driver and emulator "
            f"{cores.get('driver_and_emulator', '-')}, the whole machine {cores['machine']} of {cores['of']}"
        )
    print(f"ratio Handshake / reference (CPU per checkout): {r if r is not None else 'unavailable'}")
    if ref is not None and ok is None:
        print(f"reference: {ref['error']}")
    print("Handshake latency (ms):")
    for key, label in LATENCIES:
        print(f"  {label:30}{_pcts(hs.get(key, {}))}")
    if ok:
        print("reference latency (ms):")
        for key in ("checkout_ms", "e2e_ms"):
            print(f"  {key:30}" + "  ".join(f"{k} {v:>7.1f}" for k, v in ok.get(key, {}).items()))
    print(
        "Handshake CPU ms per checkout by process: "
        + ", ".join(f"{n} {v}" for n, v in hs["cpu_ms_per_checkout_by_process"].items())
    )
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
    print(f"{'c':>4}{'HS cpu ms':>11}{'ref cpu ms':>12}{'ratio':>8}{'HS ord/s':>10}{'ref ord/s':>11}{'HS w2p p99':>12}")
    for level in levels:
        hs, ref = level["handshake"], level.get("reference") or {}
        r = ratio(hs, ref)
        print(
            f"{hs['concurrency']:>4}{hs['cpu_ms_per_checkout']:>11.1f}{ref.get('system_cpu_ms_per_order', '-'):>12}"
            f"{r if r is not None else '-':>8}{hs['throughput_orders_per_second']:>10.2f}"
            f"{ref.get('orders_per_s', '-'):>11}{hs.get('webhook_to_paid', {}).get('p99_ms', '-'):>12}"
        )


Run = tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]  # idle, levels, consumer groups


def compare_replicas(n: int, one: Run, many: Run) -> dict[str, Any]:
    """One replica of each consumer service against n, level by level: throughput, CPU per checkout (all
    processes, and per service summed over its replicas), and who consumed what."""
    (idle_1, levels_1, groups_1), (idle_n, levels_n, groups_n) = one, many
    k1, kn = "1", str(n)

    def both(a: Any, b: Any) -> dict[str, Any]:
        return {k1: a, kn: b}

    def idle_total(idle: dict[str, Any]) -> float:
        return round(sum(idle["cpu_ms_per_second_by_process"].values()), 1)

    rows = []
    for a, b in zip(levels_1, levels_n, strict=True):
        sa, sb = a["cpu_ms_per_checkout_by_service"], b["cpu_ms_per_checkout_by_service"]
        rows.append(
            {
                "concurrency": a["concurrency"],
                "completed": both(a["completed"], b["completed"]),
                "failed": both(a["failed"], b["failed"]),
                "orders_per_second": both(a["throughput_orders_per_second"], b["throughput_orders_per_second"]),
                "throughput_ratio": _over(b["throughput_orders_per_second"], a["throughput_orders_per_second"]),
                "cpu_ms_per_checkout": both(a["cpu_ms_per_checkout"], b["cpu_ms_per_checkout"]),
                "cpu_ratio": _over(b["cpu_ms_per_checkout"], a["cpu_ms_per_checkout"]),
                "cpu_ms_per_checkout_by_service": {s: both(sa.get(s), sb.get(s)) for s in dict.fromkeys([*sa, *sb])},
                "cores_busy": both(a.get("cores_busy"), b.get("cores_busy")),
                "end_to_end_client_p50_ms": both(
                    a["end_to_end_client"].get("p50_ms"), b["end_to_end_client"].get("p50_ms")
                ),
                "end_to_end_client_p95_ms": both(
                    a["end_to_end_client"].get("p95_ms"), b["end_to_end_client"].get("p95_ms")
                ),
            }
        )
    return {
        "replicas": [1, n],
        "idle_cpu_ms_per_second": both(idle_total(idle_1), idle_total(idle_n)),
        "levels": rows,
        "consumer_groups": both(groups_1, groups_n),
        # everything the bench measured of the scaled system, as "levels" holds it for one replica
        "scaled": {"handshake_idle": idle_n, "levels": levels_n},
    }


def _over(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def print_replicas(comparison: dict[str, Any]) -> None:
    n = comparison["replicas"][1]
    k1, kn = "1", str(n)
    print(f"\n=== 1 replica against {n} of each consumer service (order, payment, inventory) ===")
    print(
        f"{'c':>4}{'ord/s x1':>10}{f'ord/s x{n}':>10}{'ratio':>7}{'cpu ms x1':>11}{f'cpu ms x{n}':>11}{'ratio':>7}"
        f"{'e2e p50 x1':>12}{f'e2e p50 x{n}':>12}"
    )
    for row in comparison["levels"]:
        tp, cpu, e2e = row["orders_per_second"], row["cpu_ms_per_checkout"], row["end_to_end_client_p50_ms"]
        print(
            f"{row['concurrency']:>4}{tp[k1]:>10.2f}{tp[kn]:>10.2f}{row['throughput_ratio'] or '-':>7}"
            f"{cpu[k1]:>11.1f}{cpu[kn]:>11.1f}{row['cpu_ratio'] or '-':>7}{e2e[k1] or '-':>12}{e2e[kn] or '-':>12}"
        )
        if row["failed"][k1] or row["failed"][kn]:
            print(f"     failed: {row['failed']}")
        per = ", ".join(f"{s} {v[k1]} -> {v[kn]}" for s, v in row["cpu_ms_per_checkout_by_service"].items())
        print(f"     CPU ms per checkout by service, 1 -> {n}: {per}")
        cores = row.get("cores_busy") or {}
        if cores.get(k1) and cores.get(kn):
            print(
                "     cores busy, Handshake / driver and emulator / whole machine: "
                + ", ".join(
                    f"{c['handshake']} / {c.get('driver_and_emulator', '-')} / {c['machine']} with {k}"
                    for k, c in ((k1, cores[k1]), (kn, cores[kn]))
                )
                + f" (of {cores[kn]['of']})"
            )
    idle = comparison["idle_cpu_ms_per_second"]
    print(f"idle system, CPU ms per second: {idle[k1]} with 1, {idle[kn]} with {n}")
    print(
        f"with {n} replicas, per consumer group: events each replica handled during the levels [partitions it fetched]"
    )
    for group, replicas in comparison["consumer_groups"][kn].items():
        parts = "; ".join(
            f"{process} {row['events_consumed']} [{', '.join(p.rsplit(':', 1)[1] for p in row['partitions'])}]"
            for process, row in replicas.items()
        )
        print(f"  {group:26}{parts}")
