"""`make bench`: N full checkouts at concurrency C against the whole system on the embedded stack.

Prints throughput, latency percentiles and the CPU milliseconds per checkout spent by the system's own
processes (four services, broker, PostgreSQL; not the Stripe emulator, not this load driver), and
writes them to a JSON file. The emulator delays every webhook by one second, which puts a floor under
end-to-end latency; webhook-to-paid is therefore reported on its own, from server-side timestamps."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from handshake_devstack.stack import EmbeddedStack, StackPorts
from handshake_devstack.storefront import CheckoutTimings, Storefront
from handshake_devstack.system import System

ROOT = Path(__file__).resolve().parents[1]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000, 1)

    return {"p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "max_ms": round(ordered[-1] * 1000, 1),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 1)}  # fmt: skip


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User+system CPU of each process, its live children and its reaped children (PostgreSQL backends)."""
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


def server_times(shop: Storefront, system: System, order: dict[str, Any]) -> dict[str, float]:
    """webhook-to-paid and end-to-end from the services' own clocks (same machine)."""
    at = {step["to"]: datetime.fromisoformat(step["at"]) for step in order["timeline"]}
    out = {"server_end_to_end": (at["fulfillment_pending"] - at["draft"]).total_seconds()}
    r = shop.http.get(
        system.url("webhook-ingest") + "/v1/admin/provider-events",
        params={"order_id": order["order_id"]},
        headers=shop.admin(),
    )
    if r.status_code == 200:
        events = r.json()["provider_events"]
        received = [datetime.fromisoformat(e["first_received_at"]) for e in events
                    if e.get("type") == "payment_intent.succeeded"]  # fmt: skip
        if received:
            out["webhook_to_paid"] = (at["paid"] - min(received)).total_seconds()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--checkouts", type=int, default=200)
    parser.add_argument("-c", "--concurrency", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=0.1,
                        help="seconds between a client's status polls (they cost the order service CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results.json")
    args = parser.parse_args()

    stack = EmbeddedStack(ROOT / ".data" / "bench", StackPorts.free())
    system = System(stack, ROOT, recreate_databases=True, extra_env={
        name: {"HANDSHAKE_LOG_LEVEL": "WARNING"} for name in ("order", "payment", "inventory", "webhook-ingest")
    })  # fmt: skip
    try:
        print("starting the embedded stack and the four services ...", flush=True)
        stack.start()
        system.start()
        seed = Storefront(system)
        seed.seed(stock={"HS-MUG": 10**6, "HS-TEE": 10**6, "HS-CAP": 10**6})
        seed.full_checkout([{"sku": "HS-MUG", "quantity": 1}])  # warm-up, not measured

        pids = {name: p.proc.pid for name, p in system.processes.items() if p.proc}
        pids["broker"] = stack.broker.process.proc.pid  # type: ignore[union-attr]
        pids["postgres"] = stack.postgres.process.proc.pid  # type: ignore[union-attr]
        local = threading.local()
        results: list[tuple[CheckoutTimings, dict[str, float]]] = []
        failures: list[str] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            if not hasattr(local, "shop"):
                local.shop = Storefront(system, httpx.Client(timeout=30.0), poll_interval=args.poll_interval)
            shop: Storefront = local.shop
            timings = CheckoutTimings()
            try:
                done = shop.full_checkout([{"sku": "HS-MUG", "quantity": 1 + i % 3}, {"sku": "HS-TEE", "quantity": 1}],
                                          timings=timings)  # fmt: skip
                extra = server_times(shop, system, done["order"])
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    failures.append(repr(exc))
                return
            with lock:
                results.append((timings, extra))

        print(f"driving {args.checkouts} checkouts at concurrency {args.concurrency} ...", flush=True)
        cpu_before = cpu_seconds(pids)
        started = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.checkouts)))
        wall = time.monotonic() - started
        cpu_after = cpu_seconds(pids)
        per_process = {name: cpu_after[name] - cpu_before[name] for name in pids}
        cpu_used = sum(per_process.values())

        ok = len(results)
        figures = {
            "checkouts": args.checkouts,
            "concurrency": args.concurrency,
            "completed": ok,
            "failed": len(failures),
            "wall_seconds": round(wall, 2),
            "throughput_orders_per_second": round(ok / wall, 2),
            "cpu_ms_per_checkout": round(cpu_used * 1000 / max(ok, 1), 1),
            "checkouts_per_core_second": round(ok / cpu_used, 1) if cpu_used else None,
            "cpu_ms_per_checkout_by_process": {n: round(v * 1000 / max(ok, 1), 1) for n, v in per_process.items()},
            "checkout_response": percentiles([t.checkout_seconds for t, _ in results]),
            "time_to_client_secret": percentiles([t.client_secret_seconds for t, _ in results]),
            "webhook_to_paid": percentiles([e["webhook_to_paid"] for _, e in results if "webhook_to_paid" in e]),
            "end_to_end_client": percentiles([t.end_to_end_seconds for t, _ in results]),
            "end_to_end_server": percentiles([e["server_end_to_end"] for _, e in results]),
            "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
            "first_failures": failures[:5],
        }
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))
        print(f"written to {args.out}")
        return 0 if not failures else 1
    finally:
        system.stop()
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
