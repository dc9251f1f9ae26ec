"""Webhook acknowledgement latency: send N signed Stripe-format events (fresh ids) at concurrency C and
print the percentiles of the time until the HTTP answer (what the provider waits for).

    python -m tools.bench_webhook_ack --url http://127.0.0.1:8004/webhooks/stripe --secret whsec_...
    python -m tools.bench_webhook_ack --self-host -n 2000 -c 16

--self-host starts an embedded PostgreSQL (fresh database) and broker in a temporary directory, runs the
service as its own process (`python -m handshake_webhook_ingest serve`, uvicorn) on a free port, benchmarks
it and stops everything. Otherwise nothing is started: the URL must point at a running service whose
HANDSHAKE_STRIPE_WEBHOOK_SECRETS contains --secret. Every event is new, so each request is a full
verify + insert + outbox write + commit (the duplicate path is cheaper)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def signed(secret: str) -> tuple[bytes, dict[str, str]]:
    """A payment_intent.succeeded with a fresh event id, signed exactly as Stripe signs it."""
    pi = "pi_" + secrets.token_hex(12)
    event = {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2017-08-15",
        "created": int(time.time()),
        "livemode": False,
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": pi,
                "object": "payment_intent",
                "amount": 4999,
                "currency": "eur",
                "status": "succeeded",
                "client_secret": f"{pi}_secret_{secrets.token_hex(8)}",
                "metadata": {"order_id": str(uuid.uuid4()), "attempt_id": str(uuid.uuid4())},
            }
        },
    }
    body = json.dumps(event).encode()
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


async def run(url: str, secret: str, n: int, concurrency: int, warmup: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        for _ in range(warmup):  # connections, prepared statements, JIT of the first code paths
            body, headers = signed(secret)
            (await client.post(url, content=body, headers=headers)).raise_for_status()
        queue: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(n):
            queue.put_nowait(None)

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body, headers = signed(secret)  # signed just before sending, outside the timing
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] += 1

        began = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - began
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": n,
        "concurrency": concurrency,
        "statuses": dict(statuses),
        "throughput_per_s": round(n / elapsed, 1),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(ms[-1], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


@contextmanager
def self_hosted() -> Iterator[tuple[str, str]]:
    """An embedded PostgreSQL + broker and the service as a separate uvicorn process; yields (url, secret)."""
    from handshake_devstack.broker import EmbeddedBroker
    from handshake_devstack.postgres import EmbeddedPostgres
    from handshake_devstack.processes import free_port

    root = Path(tempfile.mkdtemp(prefix="handshake-bench-ack-"))
    postgres = EmbeddedPostgres(root / "postgres", free_port(), log_dir=root / "logs")
    broker = EmbeddedBroker(free_port(), log_dir=root / "logs")
    service: subprocess.Popen[bytes] | None = None
    try:
        postgres.start()
        broker.start()
        secret = "whsec_" + secrets.token_hex(24)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
        env.update(
            {
                "HANDSHAKE_DATABASE_URL": postgres.create_database("webhook_ingest_bench", recreate=True),
                "HANDSHAKE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "HANDSHAKE_KAFKA_ENABLE_IDEMPOTENCE": "false",
                "HANDSHAKE_HTTP_PORT": str(port),
                "HANDSHAKE_STRIPE_WEBHOOK_SECRETS": secret,
                "HANDSHAKE_GAP_SCAN_INTERVAL_SECONDS": "0",
                "HANDSHAKE_ENVIRONMENT": "development",
            }
        )
        with open(root / "logs" / "webhook-ingest.log", "wb") as log:
            service = subprocess.Popen(
                [sys.executable, "-m", "handshake_webhook_ingest", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if service.poll() is not None:
                raise RuntimeError(f"the service exited; see {root / 'logs' / 'webhook-ingest.log'}")
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not become ready in 60 s")
            time.sleep(0.2)
        yield base + "/webhooks/stripe", secret
    finally:
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        broker.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="the webhook endpoint, e.g. http://127.0.0.1:8004/webhooks/stripe")
    parser.add_argument("--secret", help="a webhook signing secret the service accepts")
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--self-host", action="store_true", help="start an embedded stack and the service")
    args = parser.parse_args()
    if args.self_host:
        with self_hosted() as (url, secret):
            result = asyncio.run(run(url, secret, args.requests, args.concurrency, args.warmup))
    else:
        if not args.url or not args.secret:
            parser.error("--url and --secret are required unless --self-host")
        result = asyncio.run(run(args.url, args.secret, args.requests, args.concurrency, args.warmup))
    print(json.dumps(result))
    print(
        f"ack latency over {result['requests']} new events at concurrency {result['concurrency']}: "
        f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms "
        f"(max {result['max_ms']} ms, {result['throughput_per_s']}/s, statuses {result['statuses']})"
    )


if __name__ == "__main__":
    main()
