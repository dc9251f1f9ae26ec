"""The dashboard's figures: each service's /metrics (Prometheus text) scraped on an interval into a bounded
ring per figure. Memory is fixed (figures x points); a restart of the console starts the rings empty, which is
all a glance at the last half hour needs (Prometheus keeps the history)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.parser import text_string_to_metric_families

from handshake_console.domain.charts import increases, sparkline_points

log = structlog.get_logger("console.dashboard")

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float | None:
    found = [v for lbl, v in samples.get(name, []) if all(lbl.get(k) == want for k, want in labels.items())]
    return sum(found) if found else None


def maximum(samples: Samples, name: str) -> float | None:
    found = [v for _, v in samples.get(name, [])]
    return max(found) if found else None


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    service: str
    read: Callable[[Samples], float | None]
    # a counter is shown as its increase per scrape; a gauge as it is
    counter: bool = True
    unit: str = ""
    # the order search this number has orders behind it in
    link: str | None = None


STUCK_STATES = ("draft", "payment_pending", "payment_authorized", "paid", "fulfillment_pending", "capture_failed",
                "needs_review", "refund_requested")  # fmt: skip


def _ack_mean(samples: Samples) -> float | None:
    seconds = total(samples, "handshake_webhook_ack_seconds_sum")
    count = total(samples, "handshake_webhook_ack_seconds_count")
    return None if seconds is None or count is None else seconds / count if count else 0.0


def figures() -> list[Figure]:
    found = [
        Figure("checkouts", "Checkouts created", "order", lambda s: total(s, "handshake_checkouts_created_total")),
        Figure("payments_succeeded", "Payments succeeded", "payment",
               lambda s: total(s, "handshake_payment_attempts_total", outcome="succeeded")),
        Figure("payments_failed", "Payments failed", "payment",
               lambda s: total(s, "handshake_payment_attempts_total", outcome="failed"),
               link="/search?state=payment_failed"),
        Figure("webhook_deliveries", "Webhook deliveries", "webhook-ingest",
               lambda s: total(s, "handshake_webhook_deliveries_total")),
        Figure("webhook_duplicates", "Webhook duplicates", "webhook-ingest",
               lambda s: total(s, "handshake_webhook_duplicates_total")),
        Figure("webhook_rejected", "Webhooks rejected", "webhook-ingest",
               lambda s: total(s, "handshake_webhook_rejected_total")),
        Figure("webhook_ack", "Webhook ack latency (mean since start)", "webhook-ingest", _ack_mean, counter=False,
               unit="s"),
        Figure("refunds_succeeded", "Refunds succeeded", "payment",
               lambda s: total(s, "handshake_payment_refunds_total", outcome="succeeded"),
               link="/search?state=partially_refunded&state=refunded"),
        Figure("refunds_failed", "Refunds failed", "payment",
               lambda s: total(s, "handshake_payment_refunds_total", outcome="failed")),
        Figure("reconciliation_repairs", "Reconciliation repairs", "payment",
               lambda s: total(s, "handshake_reconciliation_repairs_total")),
        Figure("reconciliation_mismatches", "Reconciliation mismatches", "payment",
               lambda s: total(s, "handshake_reconciliation_mismatches_total"), link="/search?state=needs_review"),
    ]
    for service in ("order", "payment", "inventory", "webhook-ingest"):
        found.append(Figure(f"outbox_age_{service}", f"Outbox oldest unpublished ({service})", service,
                            lambda s: maximum(s, "handshake_outbox_oldest_pending_seconds"), counter=False, unit="s"))
        found.append(Figure(f"dead_letters_{service}", f"Dead letters open ({service})", service,
                            lambda s: total(s, "handshake_dead_letters_open"), counter=False))
    for state in STUCK_STATES:
        found.append(Figure(f"stuck_{state}", f"Stuck orders: {state.replace('_', ' ')}", "order",
                            lambda s, state=state: total(s, "handshake_orders_stuck", state=state), counter=False,
                            link=f"/search?state={state}&stuck=15"))
    return found


@dataclass
class Ring:
    points: int
    values: deque[float | None] = field(init=False)
    times: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.values = deque(maxlen=self.points)
        self.times = deque(maxlen=self.points)

    def add(self, at: float, value: float | None) -> None:
        self.times.append(at)
        self.values.append(value)


class Dashboard:
    def __init__(self, scrape: Callable[[str], Any], *, points: int, interval_seconds: float,
                 services: Iterable[str]) -> None:  # fmt: skip
        self.scrape = scrape
        self.interval = interval_seconds
        self.services = list(services)
        self.figures = figures()
        self.rings = {f.key: Ring(points + 1) for f in self.figures}
        self.last_error: dict[str, str] = {}
        self.last_scrape: float | None = None
        self._stopping = asyncio.Event()

    async def scrape_once(self) -> None:
        async def one(service: str) -> tuple[str, Samples | None]:
            try:
                text = await self.scrape(service)
                if text is None:
                    self.last_error[service] = "no address configured"
                    return service, None
                self.last_error.pop(service, None)
                return service, parse_samples(text)
            except Exception as exc:  # noqa: BLE001 - a service that is away shows as a gap, not an error page
                self.last_error[service] = type(exc).__name__
                return service, None

        results = dict(await asyncio.gather(*(one(s) for s in self.services)))
        now = time.time()
        for figure in self.figures:
            samples = results.get(figure.service)
            self.rings[figure.key].add(now, figure.read(samples) if samples is not None else None)
        self.last_scrape = now

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.scrape_once()
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stopping.set()

    def view(self) -> list[dict[str, Any]]:
        """What the page shows per figure: the latest number (a counter's last increase and its total), and
        the sparkline's points."""
        shown = []
        for figure in self.figures:
            values = list(self.rings[figure.key].values)
            series = increases(values) if figure.counter else values[1:] if len(values) > 1 else values
            latest = values[-1] if values else None
            shown.append({
                "key": figure.key, "title": figure.title, "service": figure.service, "unit": figure.unit,
                "counter": figure.counter, "link": figure.link, "total": latest,
                "latest": (series[-1] if series else None) if figure.counter else latest,
                "points": sparkline_points(series),
            })  # fmt: skip
        return shown
