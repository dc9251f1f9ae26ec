"""The dashboard's figures: every replica's /metrics (Prometheus text) scraped on an interval, combined per
figure across the pods (domain/replicas.py) into a bounded ring per figure. Memory is fixed (figures x points,
plus one reading per pod per counter); a restart of the console starts the rings empty, which is all a glance
at the last half hour needs (Prometheus keeps the history)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.parser import text_string_to_metric_families

from handshake_console.domain.charts import sparkline_points
from handshake_console.domain.replicas import counter_increase, gauge_across_pods, mean_across_pods, remembered
from handshake_console.scrape import PodScrape

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


# a counter is shown as its increase per scrape; a gauge as it is; a mean as read / per
COUNTER, GAUGE, MEAN = "counter", "gauge", "mean"


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    service: str
    # one pod's reading
    read: Callable[[Samples], float | None]
    kind: str = COUNTER
    unit: str = ""
    # the order search this number has orders behind it in
    link: str | None = None
    # a mean's count, which `read`'s total is divided by once both are summed over the pods
    per: Callable[[Samples], float | None] | None = None


STUCK_STATES = (
    "draft",
    "payment_pending",
    "payment_authorized",
    "paid",
    "fulfillment_pending",
    "capture_failed",
    "needs_review",
    "refund_requested",
)


def figures() -> list[Figure]:
    found = [
        Figure("checkouts", "Checkouts created", "order", lambda s: total(s, "handshake_checkouts_created_total")),
        Figure(
            "payments_succeeded",
            "Payments succeeded",
            "payment",
            lambda s: total(s, "handshake_payment_attempts_total", outcome="succeeded"),
        ),
        Figure(
            "payments_failed",
            "Payments failed",
            "payment",
            lambda s: total(s, "handshake_payment_attempts_total", outcome="failed"),
            link="/search?state=payment_failed",
        ),
        Figure(
            "webhook_deliveries",
            "Webhook deliveries",
            "webhook-ingest",
            lambda s: total(s, "handshake_webhook_deliveries_total"),
        ),
        Figure(
            "webhook_duplicates",
            "Webhook duplicates",
            "webhook-ingest",
            lambda s: total(s, "handshake_webhook_duplicates_total"),
        ),
        Figure(
            "webhook_rejected",
            "Webhooks rejected",
            "webhook-ingest",
            lambda s: total(s, "handshake_webhook_rejected_total"),
        ),
        Figure(
            "webhook_ack",
            "Webhook ack latency (mean since start)",
            "webhook-ingest",
            lambda s: total(s, "handshake_webhook_ack_seconds_sum"),
            kind=MEAN,
            unit="s",
            per=lambda s: total(s, "handshake_webhook_ack_seconds_count"),
        ),
        Figure(
            "refunds_succeeded",
            "Refunds succeeded",
            "payment",
            lambda s: total(s, "handshake_payment_refunds_total", outcome="succeeded"),
            link="/search?state=partially_refunded&state=refunded",
        ),
        Figure(
            "refunds_failed",
            "Refunds failed",
            "payment",
            lambda s: total(s, "handshake_payment_refunds_total", outcome="failed"),
        ),
        Figure(
            "reconciliation_repairs",
            "Reconciliation repairs",
            "payment",
            lambda s: total(s, "handshake_reconciliation_repairs_total"),
        ),
        Figure(
            "reconciliation_mismatches",
            "Reconciliation mismatches",
            "payment",
            lambda s: total(s, "handshake_reconciliation_mismatches_total"),
            link="/search?state=needs_review",
        ),
    ]
    for service in ("order", "payment", "inventory", "webhook-ingest"):
        found.append(
            Figure(
                f"outbox_age_{service}",
                f"Outbox oldest unpublished ({service})",
                service,
                lambda s: maximum(s, "handshake_outbox_oldest_pending_seconds"),
                kind=GAUGE,
                unit="s",
            )
        )
        found.append(
            Figure(
                f"dead_letters_{service}",
                f"Dead letters open ({service})",
                service,
                lambda s: total(s, "handshake_dead_letters_open"),
                kind=GAUGE,
            )
        )
    for state in STUCK_STATES:
        found.append(
            Figure(
                f"stuck_{state}",
                f"Stuck orders: {state.replace('_', ' ')}",
                "order",
                functools.partial(total, name="handshake_orders_stuck", state=state),
                kind=GAUGE,
                link=f"/search?state={state}&stuck=15",
            )
        )
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
    def __init__(
        self,
        scrape: Callable[[str], Awaitable[PodScrape | None]],
        *,
        points: int,
        interval_seconds: float,
        services: Iterable[str],
    ) -> None:
        self.scrape = scrape
        self.interval = interval_seconds
        self.services = list(services)
        self.figures = figures()
        self.rings = {f.key: Ring(points) for f in self.figures}
        # per counter: each pod's last reading, which its next increase is measured from
        self.previous: dict[str, dict[str, float]] = {}
        # per counter: the answering pods' readings added up (what they counted since each started)
        self.totals: dict[str, float | None] = {}
        # per service: what went wrong with it or with one of its pods in the last scrape
        self.last_error: dict[str, list[str]] = {}
        # per service: pods that answered, pods asked
        self.pods: dict[str, tuple[int, int]] = {}
        self.last_scrape: float | None = None
        self._stopping = asyncio.Event()

    async def _service(self, service: str) -> tuple[PodScrape, dict[str, Samples]] | None:
        # a count of pods from an earlier scrape would read as this one's
        self.pods.pop(service, None)
        try:
            found = await self.scrape(service)
        except Exception as exc:
            self.last_error[service] = [f"its pods cannot be found ({type(exc).__name__})"]
            return None
        if found is None:
            self.last_error[service] = ["no address configured"]
            return None
        problems = [f"pod {pod} did not answer ({why})" for pod, why in found.failures.items()]
        samples: dict[str, Samples] = {}
        for pod, text in found.texts.items():
            try:
                samples[pod] = parse_samples(text)
            except ValueError:
                problems.append(f"pod {pod} sent unreadable metrics")
        if not found.pods:
            problems.append("its address names no pod")
        if found.left_out:
            problems.append(f"{found.left_out} more pods not scraped (limit {len(found.pods)})")
        if problems:
            log.warning("dashboard scrape incomplete", service=service, problems=problems)
            self.last_error[service] = problems
        else:
            self.last_error.pop(service, None)
        self.pods[service] = (len(samples), len(found.pods))
        return found, samples

    async def scrape_once(self) -> None:
        scraped = dict(
            zip(self.services, await asyncio.gather(*(self._service(s) for s in self.services)), strict=True)
        )
        now = time.time()
        for figure in self.figures:
            result = scraped.get(figure.service)
            self.rings[figure.key].add(now, self._combine(figure, *result) if result is not None else None)
            if result is None and figure.kind == COUNTER:
                self.totals[figure.key] = None
        self.last_scrape = now

    def _combine(self, figure: Figure, found: PodScrape, samples: dict[str, Samples]) -> float | None:
        if figure.kind == COUNTER:
            # prometheus_client exports a labelled counter only once it has counted: a pod that answered
            # without it has counted none yet (so its first one is counted, not taken as its baseline)
            current = {pod: figure.read(s) or 0.0 for pod, s in samples.items()}
            previous = self.previous.get(figure.key, {})
            self.previous[figure.key] = remembered(previous, current, found.pods)
            self.totals[figure.key] = sum(current.values()) if current else None
            return counter_increase(previous, current)
        if figure.kind == MEAN:
            assert figure.per is not None
            pairs = {
                pod: (read, per)
                for pod, s in samples.items()
                if (read := figure.read(s)) is not None and (per := figure.per(s)) is not None
            }
            return mean_across_pods(pairs)
        return gauge_across_pods({pod: v for pod, s in samples.items() if (v := figure.read(s)) is not None})

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.scrape_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def stop(self) -> None:
        self._stopping.set()

    def view(self) -> list[dict[str, Any]]:
        """What the page shows per figure: the latest number (a counter's last increase, with the total of the
        pods that answered), and the sparkline's points."""
        shown = []
        for figure in self.figures:
            values = list(self.rings[figure.key].values)
            counter = figure.kind == COUNTER
            shown.append(
                {
                    "key": figure.key,
                    "title": figure.title,
                    "service": figure.service,
                    "unit": figure.unit,
                    "counter": counter,
                    "link": figure.link,
                    "total": self.totals.get(figure.key) if counter else None,
                    "latest": values[-1] if values else None,
                    "points": sparkline_points(values),
                }
            )
        return shown
