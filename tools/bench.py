"""`make bench`: Handshake against the reference monolith, on the same machine, at several concurrencies.

For each level (concurrency C, N checkouts) the reference peer (a one-process, one-database checkout kept
outside the repository, `--reference`) runs first, then the whole Handshake system on the embedded stack: the
four services, the broker and PostgreSQL, started once and reused across levels. Prints, per level, the CPU
milliseconds per checkout of each (their own processes: not the Stripe emulator, not the load driver), the
ratio, throughput and latency percentiles, and for Handshake the CPU by process and what one checkout costs in
SQL round trips, transactions, connections, Kafka messages, offset commits and HTTP requests. Everything goes
to a JSON file. The emulator delays every webhook by one second, which puts a floor under end-to-end latency;
webhook-to-paid is therefore reported on its own, from server-side timestamps.

The reference runs while Handshake is not running yet: an idle Handshake costs CPU (consumers and relays poll),
and on a small machine that would slow the reference down.

With --replicas N (N > 1) Handshake then runs a second time, on a fresh stack, with N replicas of each consumer
service (order, payment, inventory: N processes each, one database and one consumer group per service, so the
broker splits each topic's partitions among them), at the same levels; the comparison with one replica, and
which partitions each replica consumed, is printed and written under "replicas". webhook-ingest consumes no topic
and stays at one replica (the emulator posts to one address)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from handshake_devstack.stack import EmbeddedStack, StackPorts
from handshake_devstack.storefront import Storefront
from handshake_devstack.system import System
from tools.bench_measure import (
    add_server_times,
    consumption,
    consumption_between,
    measure_idle,
    measure_level,
    system_pids,
)
from tools.bench_reference import run_reference
from tools.bench_report import compare_replicas, print_level, print_replicas, print_summary, ratio

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tools" / "bench_probe"
SERVICES = ("order", "payment", "inventory", "webhook-ingest")
CONSUMER_SERVICES = ("order", "payment", "inventory")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--checkouts", type=int, default=200, help="checkouts per level")
    parser.add_argument("--levels", default="1,20,50", help="concurrencies, comma-separated")
    parser.add_argument("-c", "--concurrency", type=int, help="a single level (same as --levels C)")
    parser.add_argument(
        "--reference",
        type=Path,
        default=ROOT.parent / "shared" / "bench" / "baseline_monolith.py",
        help="the reference peer's script; missing: Handshake is measured alone",
    )
    parser.add_argument("--reference-timeout", type=float, default=900.0, help="seconds per reference run")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=15.0,
        help="idle window measuring the system's background CPU and counters",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.1,
        help="seconds between a client's status polls (they cost the order service CPU)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="N > 1: run Handshake again with N replicas of each consumer service and compare",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results.json")
    args = parser.parse_args()
    args.levels = [args.concurrency] if args.concurrency else [int(c) for c in args.levels.split(",") if c.strip()]
    return args


def run_references(args: argparse.Namespace) -> dict[int, dict[str, Any]] | None:
    reference = args.reference if args.reference.is_absolute() else (Path.cwd() / args.reference)
    if not reference.is_file():
        print(f"reference monolith not found at {reference}: measuring Handshake alone, no ratio", flush=True)
        return None
    out: dict[int, dict[str, Any]] = {}
    for c in args.levels:
        print(f"reference: {args.checkouts} checkouts at concurrency {c} ({reference}) ...", flush=True)
        out[c] = run_reference(
            reference,
            checkouts=args.checkouts,
            concurrency=c,
            workdir=ROOT / ".data" / "bench-reference",
            cwd=ROOT,
            timeout=args.reference_timeout,
        )
        print(f"  {json.dumps(out[c])}", flush=True)
    return out


def start_handshake(replicas: int = 1) -> tuple[EmbeddedStack, System]:
    stack = EmbeddedStack(ROOT / ".data" / "bench", StackPorts.free())
    pythonpath = os.pathsep.join(p for p in (str(PROBE), os.environ.get("PYTHONPATH", "")) if p)
    system = System(
        stack,
        ROOT,
        recreate_databases=True,
        extra_env={name: {"HANDSHAKE_LOG_LEVEL": "WARNING", "PYTHONPATH": pythonpath} for name in SERVICES},
        replicas={name: replicas for name in CONSUMER_SERVICES},
    )
    scaled = f", {replicas} replicas of {', '.join(CONSUMER_SERVICES)}" if replicas > 1 else ""
    print(f"starting the embedded stack and the four services{scaled} ...", flush=True)
    try:
        stack.start()
        system.start()
    except BaseException:
        stack.stop()
        raise
    return stack, system


def measure_handshake(
    args: argparse.Namespace, stack: EmbeddedStack, system: System
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """The idle figures, each level's figures, and per consumer group what each replica consumed during the
    levels."""
    seed = Storefront(system)
    seed.seed(stock={"HS-MUG": 10**6, "HS-TEE": 10**6, "HS-CAP": 10**6})
    seed.full_checkout([{"sku": "HS-MUG", "quantity": 1}])  # warm-up, not measured
    pids = system_pids(stack, system)
    with httpx.Client(timeout=30.0) as http:
        print(f"measuring the idle system for {args.idle_seconds:.0f}s ...", flush=True)
        idle, settled = measure_idle(stack, system, pids, http, args.idle_seconds)
        consumed_before = consumption(system, http)
        levels, orders = [], []
        for c in args.levels:
            print(f"Handshake: {args.checkouts} checkouts at concurrency {c} ...", flush=True)
            figures, settled, done = measure_level(
                stack,
                system,
                pids,
                http,
                checkouts=args.checkouts,
                concurrency=c,
                poll_interval=args.poll_interval,
                idle=idle,
                before=settled,
            )
            levels.append(figures)
            orders.append(done)
        consumed = consumption_between(consumed_before, consumption(system, http))
        for figures, done in zip(levels, orders, strict=True):
            add_server_times(figures, system, http, done)
    idle_figures = {
        "cpu_ms_per_second_by_process": {
            k.split(".", 1)[1]: round(v, 1) for k, v in idle.items() if k.startswith("cpu_ms.")
        },
        "counts_per_second": {k: round(v, 2) for k, v in sorted(idle.items()) if not k.startswith("cpu_ms.") and v},
    }
    return idle_figures, levels, consumed


def run_handshake(
    args: argparse.Namespace, replicas: int
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    stack, system = start_handshake(replicas)
    try:
        return measure_handshake(args, stack, system)
    finally:
        system.stop()
        stack.stop()


def main() -> int:
    args = parse_args()
    references = run_references(args)
    idle, measured, consumed = run_handshake(args, 1)
    # a fresh stack for the second run: the broker's memory and the databases start as empty as the first's
    scaled = run_handshake(args, args.replicas) if args.replicas > 1 else None

    levels = []
    for figures in measured:
        reference = references.get(figures["concurrency"]) if references is not None else None
        levels.append(
            {
                "concurrency": figures["concurrency"],
                "cpu_ratio": ratio(figures, reference),
                "handshake": figures,
                "reference": reference,
            }
        )
    results = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reference_script": str(args.reference) if references is not None else None,
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
        "handshake_idle": idle,
        "levels": levels,
        "consumer_groups": consumed,
    }
    replicas = compare_replicas(args.replicas, (idle, measured, consumed), scaled) if scaled is not None else None
    if replicas is not None:
        results["replicas"] = replicas
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for level in levels:
        print_level(level)
    print(f"\nHandshake idle, CPU ms per second: {idle['cpu_ms_per_second_by_process']}")
    print_summary(levels)
    if replicas is not None:
        print_replicas(replicas)
    print(f"\nwritten to {args.out}")
    failed = [level["failed"] for level in measured + (scaled[1] if scaled is not None else [])]
    return 0 if not any(failed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
