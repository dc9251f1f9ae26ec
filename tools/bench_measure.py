"""What `make bench` measures on a running Handshake system: one level of load, and the counts around it."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from handshake_devstack.stack import EmbeddedStack
from handshake_devstack.storefront import CheckoutTimings, Storefront
from handshake_devstack.system import System

SERVICES = ("order", "payment", "inventory", "webhook-ingest")
# PostgreSQL publishes a backend's counters when it goes idle, at most every 10 s (PGSTAT_IDLE_INTERVAL)
STATS_FLUSH_SECONDS = 11.0


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000, 1)

    return {
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
    }


def system_pids(stack: EmbeddedStack, system: System) -> dict[str, int]:
    pids = {name: p.proc.pid for name, p in system.processes.items() if p.proc}
    pids["broker"] = stack.broker.process.proc.pid  # type: ignore[union-attr]
    pids["postgres"] = stack.postgres.process.proc.pid  # type: ignore[union-attr]
    return pids


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User+system CPU of each process, its live children and its reaped children: PostgreSQL backends that
    exit during the run (connection churn) are counted too."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        total = 0.0
        try:
            proc = psutil.Process(pid)
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
            for child in proc.children(recursive=True):
                try:
                    c = child.cpu_times()
                    total += c.user + c.system
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
        out[name] = total
    return out


def tools_cpu_seconds(stack: EmbeddedStack) -> float:
    """The load driver's (this process, not its children: they are the system) and the Stripe emulator's CPU:
    not the system's, but they share the machine with it."""
    total = 0.0
    for proc in (psutil.Process(), psutil.Process(stack.stripe.process.proc.pid)):  # type: ignore[union-attr]
        t = proc.cpu_times()
        total += t.user + t.system
    return total


def busy_seconds(before: Any, after: Any) -> float:
    """CPU seconds the whole machine was busy between two psutil.cpu_times() readings."""
    idle = ("idle", "iowait", "steal", "guest", "guest_nice")  # guest time is counted in user already
    return sum(getattr(after, f) - getattr(before, f) for f in after._fields if f not in idle)


def database_counts(stack: EmbeddedStack, system: System) -> dict[str, float]:
    """Transactions and new sessions of each service database, from pg_stat_database."""
    names = {url.rsplit("/", 1)[1]: service for service, url in system.database_urls.items()}
    quoted = ",".join(f"'{n}'" for n in names)
    rows = stack.postgres.psql(
        f"SELECT datname, xact_commit, xact_rollback, sessions FROM pg_stat_database WHERE datname IN ({quoted})"
    )
    out: dict[str, float] = {}
    for row in rows.split():
        datname, commits, rollbacks, sessions = row.split("|")
        service = names[datname]
        out[f"sql_transactions.{service}"] = float(commits) + float(rollbacks)
        out[f"sql_rollbacks.{service}"] = float(rollbacks)
        out[f"db_connections_opened.{service}"] = float(sessions)
    return out


# the services' own counters, and the bench probe's (tools/bench_probe), summed per service
METRICS: dict[str, Callable[[str, dict[str, str]], str | None]] = {
    "handshake_outbox_published": lambda s, labels: "kafka_produced",
    "handshake_events_consumed": lambda s, labels: f"kafka_consumed_{labels.get('outcome', 'all')}",
    "handshake_bench_kafka_offset_commits": lambda s, labels: "kafka_offset_commits",
    "handshake_bench_http_requests": lambda s, labels: "http_requests_served",
    "handshake_bench_sql_round_trips": lambda s, labels: f"sql_round_trips_{labels.get('kind', 'all')}",
}


# a labelled counter shows a label only once it has counted: these read as zero, not as unavailable
ZERO_LABELS = {
    "handshake_events_consumed": [{"outcome": o} for o in ("applied", "duplicate", "ignored", "dead_lettered")],
    "handshake_bench_sql_round_trips": [{"kind": k} for k in ("execute", "prepare", "simple")],
}


def metric_counts(system: System, http: httpx.Client) -> dict[str, float]:
    """Summed over a service's replicas: a checkout's cost does not depend on which replica did the work."""
    out: dict[str, float] = {}
    for service in SERVICES:
        for url in system.urls(service):
            text = http.get(url + "/metrics").text
            for family in text_string_to_metric_families(text):
                name_of = METRICS.get(family.name)
                if name_of is None:
                    continue
                for labels in ZERO_LABELS.get(family.name, []):
                    out.setdefault(f"{name_of(service, labels)}.{service}", 0.0)
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        key = f"{name_of(service, sample.labels)}.{service}"
                        out[key] = out.get(key, 0.0) + sample.value
    return out


# (consumer group, replica process) -> events the replica's consumer handled, records it fetched per partition
Consumption = dict[tuple[str, str], dict[str, Any]]


def consumption(system: System, http: httpx.Client) -> Consumption:
    """What each replica's consumers took so far: the service's own count of events handled and the bench
    probe's records fetched per partition, which shows how the broker split a group's partitions."""
    out: Consumption = {}
    for service in SERVICES:
        for i, url in enumerate(system.urls(service)):
            process = System.replica_name(service, i)
            for family in text_string_to_metric_families(http.get(url + "/metrics").text):
                for sample in family.samples:
                    if sample.name == "handshake_events_consumed_total":
                        row = out.setdefault((sample.labels["consumer"], process), {"events": 0.0, "fetched": {}})
                        row["events"] += sample.value
                    elif sample.name == "handshake_bench_kafka_records_fetched_total":
                        row = out.setdefault((sample.labels["group"], process), {"events": 0.0, "fetched": {}})
                        partition = f"{sample.labels['topic']}:{sample.labels['partition']}"
                        row["fetched"][partition] = row["fetched"].get(partition, 0.0) + sample.value
    return out


def consumption_between(before: Consumption, after: Consumption) -> dict[str, dict[str, Any]]:
    """Per consumer group and replica: events handled and the partitions it fetched records from between two
    readings (the measured levels, after the group has settled)."""
    out: dict[str, dict[str, Any]] = {}
    for (group, process), row in sorted(after.items()):
        was = before.get((group, process), {"events": 0.0, "fetched": {}})
        fetched = {p: n - was["fetched"].get(p, 0.0) for p, n in row["fetched"].items()}
        out.setdefault(group, {})[process] = {
            "events_consumed": round(row["events"] - was["events"]),
            "partitions": sorted(
                (p for p, n in fetched.items() if n > 0), key=lambda p: (p.rsplit(":", 1)[0], int(p.rsplit(":", 1)[1]))
            ),
            "records_fetched": round(sum(fetched.values())),
        }
    return out


def by_service(per_process: dict[str, float]) -> dict[str, float]:
    """Figures per process summed over a service's replicas ("order#1" is order's second replica)."""
    out: dict[str, float] = {}
    for process, value in per_process.items():
        service = process.split("#", 1)[0]
        out[service] = out.get(service, 0.0) + value
    return out


@dataclass
class Snapshot:
    at: float
    counts: dict[str, float]
    cpu: dict[str, float]


def snapshot(stack: EmbeddedStack, system: System, pids: dict[str, int], http: httpx.Client) -> Snapshot:
    counts = database_counts(stack, system) | metric_counts(system, http)
    return Snapshot(time.monotonic(), counts, cpu_seconds(pids))


def rates(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """Per second, everything counted between two snapshots: the system's background work while idle."""
    seconds = after.at - before.at
    keys = set(after.counts) | set(before.counts)
    out = {k: (after.counts.get(k, 0.0) - before.counts.get(k, 0.0)) / seconds for k in keys}
    out |= {f"cpu_ms.{k}": (after.cpu[k] - before.cpu[k]) * 1000 / seconds for k in after.cpu}
    return out


def per_checkout_counts(
    before: Snapshot, after: Snapshot, driving_seconds: float, idle: dict[str, float], completed: int
) -> dict[str, Any]:
    """Counter deltas per completed checkout, by service and in total. The snapshots straddle the run by the
    statistics flush delay; the idle background of that extra time is taken out, the background during the
    run stays in (as it does in the CPU figure)."""
    extra = max(0.0, after.at - before.at - driving_seconds)
    by_metric: dict[str, dict[str, float]] = {}
    for key in sorted(set(after.counts) | set(before.counts)):
        metric, service = key.split(".", 1)
        delta = after.counts.get(key, 0.0) - before.counts.get(key, 0.0) - idle.get(key, 0.0) * extra
        by_metric.setdefault(metric, {})[service] = max(0.0, delta) / max(completed, 1)
    out: dict[str, Any] = {}
    for metric, services in by_metric.items():
        out[metric] = {"total": round(sum(services.values()), 2)} | {s: round(v, 2) for s, v in services.items()}
    trips = [by_metric[k] for k in by_metric if k.startswith("sql_round_trips_")]
    if trips:
        services = {s: sum(t.get(s, 0.0) for t in trips) for s in SERVICES}
        out["sql_round_trips"] = {"total": round(sum(services.values()), 2)} | {
            s: round(v, 2) for s, v in services.items()
        }
    return out


@dataclass
class Outcome:
    timings: list[CheckoutTimings] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    driver_requests: int = 0


def drive(system: System, checkouts: int, concurrency: int, poll_interval: float) -> Outcome:
    """N full checkouts at concurrency C, one storefront (and HTTP client) per driver thread."""
    local = threading.local()
    outcome = Outcome()
    lock = threading.Lock()
    clients: list[httpx.Client] = []
    requests = [0]

    def counted(_: httpx.Request) -> None:
        with lock:
            requests[0] += 1

    def one(i: int) -> None:
        if not hasattr(local, "shop"):
            client = httpx.Client(timeout=30.0, event_hooks={"request": [counted]})
            with lock:
                clients.append(client)
            local.shop = Storefront(system, client, poll_interval=poll_interval)
        shop: Storefront = local.shop
        timings = CheckoutTimings()
        try:
            done = shop.full_checkout(
                [{"sku": "HS-MUG", "quantity": 1 + i % 3}, {"sku": "HS-TEE", "quantity": 1}],
                timings=timings,
                timeline=False,
            )
        except Exception as exc:
            with lock:
                outcome.failures.append(repr(exc))
            return
        with lock:
            outcome.timings.append(timings)
            outcome.orders.append(done["order"])

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(checkouts)))
    outcome.wall_seconds = time.monotonic() - started
    outcome.driver_requests = requests[0]
    for client in clients:
        client.close()
    return outcome


def server_times(shop: Storefront, system: System, order: dict[str, Any]) -> dict[str, float]:
    """webhook-to-paid and end-to-end from the services' own clocks (same machine). Asked once every level is
    measured: the admin look-up is the bench's work, not the checkout's."""
    timeline = shop.admin_order(order["order_id"])["timeline"]  # the checkout itself did not ask for it
    at = {step["to"]: datetime.fromisoformat(step["at"]) for step in timeline}
    out = {"server_end_to_end": (at["fulfillment_pending"] - at["draft"]).total_seconds()}
    r = shop.http.get(
        system.url("webhook-ingest") + "/v1/admin/provider-events",
        params={"order_id": order["order_id"]},
        headers=shop.admin(),
    )
    if r.status_code == 200:
        events = r.json()["provider_events"]
        received = [
            datetime.fromisoformat(e["first_received_at"])
            for e in events
            if e.get("type") == "payment_intent.succeeded"
        ]
        if received:
            out["webhook_to_paid"] = (at["paid"] - min(received)).total_seconds()
    return out


def measure_idle(
    stack: EmbeddedStack, system: System, pids: dict[str, int], http: httpx.Client, seconds: float
) -> tuple[dict[str, float], Snapshot]:
    """The system's background cost with no load: CPU and counters per second."""
    time.sleep(STATS_FLUSH_SECONDS)
    start = snapshot(stack, system, pids, http)
    time.sleep(seconds)
    end = snapshot(stack, system, pids, http)
    return rates(start, end), end


def measure_level(
    stack: EmbeddedStack,
    system: System,
    pids: dict[str, int],
    http: httpx.Client,
    *,
    checkouts: int,
    concurrency: int,
    poll_interval: float,
    idle: dict[str, float],
    before: Snapshot,
) -> tuple[dict[str, Any], Snapshot, list[dict[str, Any]]]:
    """One level: `before` is a settled snapshot; returns the figures, the settled snapshot after and the
    orders, whose server-side times are read once every level is done (add_server_times)."""
    cpu_before, tools_before, machine_before = cpu_seconds(pids), tools_cpu_seconds(stack), psutil.cpu_times()
    outcome = drive(system, checkouts, concurrency, poll_interval)
    cpu_after, tools_after, machine_after = cpu_seconds(pids), tools_cpu_seconds(stack), psutil.cpu_times()
    time.sleep(STATS_FLUSH_SECONDS)
    after = snapshot(stack, system, pids, http)

    ok = len(outcome.orders)
    per_process = {name: cpu_after[name] - cpu_before[name] for name in pids}
    cpu_used = sum(per_process.values())
    counts = per_checkout_counts(before, after, outcome.wall_seconds, idle, ok)
    counts["http_requests_from_driver"] = {"total": round(outcome.driver_requests / max(ok, 1), 2)}
    timings = outcome.timings
    figures = {
        "checkouts": checkouts,
        "concurrency": concurrency,
        "completed": ok,
        "failed": len(outcome.failures),
        "wall_seconds": round(outcome.wall_seconds, 2),
        "throughput_orders_per_second": round(ok / outcome.wall_seconds, 2),
        "cpu_ms_per_checkout": round(cpu_used * 1000 / max(ok, 1), 1),
        "checkouts_per_core_second": round(ok / cpu_used, 1) if cpu_used else None,
        "cpu_ms_per_checkout_by_process": {n: round(v * 1000 / max(ok, 1), 1) for n, v in per_process.items()},
        "cpu_ms_per_checkout_by_service": {
            n: round(v * 1000 / max(ok, 1), 1) for n, v in by_service(per_process).items()
        },
        # cores busy during the run: the system's own processes, and the whole machine (the driver, the emulator
        # and whatever else runs on it); on a shared machine the difference says how much the level competed for
        "cores_busy": {
            "handshake": round(cpu_used / outcome.wall_seconds, 2),
            "driver_and_emulator": round((tools_after - tools_before) / outcome.wall_seconds, 2),
            "machine": round(busy_seconds(machine_before, machine_after) / outcome.wall_seconds, 2),
            "of": psutil.cpu_count(),
        },
        # what the idle system would have spent over the same wall time: at low load it is much of the figure
        "cpu_ms_per_checkout_idle_background": round(
            sum(v for k, v in idle.items() if k.startswith("cpu_ms.")) * outcome.wall_seconds / max(ok, 1), 1
        ),
        "checkout_response": percentiles([t.checkout_seconds for t in timings]),
        "time_to_client_secret": percentiles([t.client_secret_seconds for t in timings]),
        "end_to_end_client": percentiles([t.end_to_end_seconds for t in timings]),
        "per_checkout": counts,
        "first_failures": outcome.failures[:5],
    }
    return figures, after, outcome.orders


def add_server_times(figures: dict[str, Any], system: System, http: httpx.Client, orders: list[dict[str, Any]]) -> None:
    shop = Storefront(system, http)
    extra = [server_times(shop, system, order) for order in orders]
    figures["webhook_to_paid"] = percentiles([e["webhook_to_paid"] for e in extra if "webhook_to_paid" in e])
    figures["end_to_end_server"] = percentiles([e["server_end_to_end"] for e in extra])
