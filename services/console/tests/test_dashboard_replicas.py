"""The dashboard with several pods per service, in-process: stand-in pods answer /metrics at their own
addresses, one name resolves to them all (the resolver and the transport are the console's, injected), and
the page shows each figure combined across the pods, and says which pod failed."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from handshake_console.scrape import resolve_addresses
from handshake_console.settings import ConsoleSettings

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

ORDER_PODS = ("10.1.0.1", "10.1.0.2")
WEBHOOK_PODS = ("10.4.0.1", "10.4.0.2")
OpenConsole = Callable[..., AbstractAsyncContextManager[Any]]


@dataclass
class Pod:
    """One replica's /metrics: its own counters since it started, and the database's gauges as it read them."""

    checkouts: int = 0
    stuck_paid: int = 0
    ack_seconds: float = 0.0
    deliveries: int = 0
    hosts: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/metrics")
        async def metrics(request: Request) -> PlainTextResponse:
            self.hosts.append(request.headers["host"])
            return PlainTextResponse(
                "# TYPE handshake_checkouts_created_total counter\n"
                f"handshake_checkouts_created_total {self.checkouts}\n"
                "# TYPE handshake_orders_stuck gauge\n"
                f'handshake_orders_stuck{{state="paid"}} {self.stuck_paid}\n'
                "# TYPE handshake_webhook_deliveries_total counter\n"
                f"handshake_webhook_deliveries_total {self.deliveries}\n"
                "# TYPE handshake_webhook_ack_seconds histogram\n"
                f"handshake_webhook_ack_seconds_sum {self.ack_seconds}\n"
                f"handshake_webhook_ack_seconds_count {self.deliveries}\n"
            )

        return app


def resolver(names: dict[str, list[str]], asked: list[tuple[str, int]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return names[host]

    return resolve


def shown(html: str, title: str) -> str:
    """The number a figure shows on the page, as text."""
    found = re.search(re.escape(title) + r'(?:</a>)?</h3>\s*<p class="number">(.*?)</p>', html, re.S)
    assert found, f"no figure {title!r}"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def open_console(
    console_with: OpenConsole,
    pods: dict[str, Pod],
    names: dict[str, list[str]],
    asked: list[tuple[str, int]],
    **settings: Any,
) -> AbstractAsyncContextManager[Any]:
    return console_with(
        hosts={address: pod.app() for address, pod in pods.items()},
        resolve=resolver(names, asked),
        console_order_metrics_url="http://order-pods.test:8080",
        console_webhook_ingest_metrics_url="http://webhook-ingest-pods.test:8080",
        **settings,
    )


async def test_every_pod_behind_the_name_is_scraped_and_each_figure_combined(console_with: OpenConsole) -> None:
    order_a, order_b = Pod(checkouts=10, stuck_paid=2), Pod(checkouts=40, stuck_paid=2)
    hook_a, hook_b = Pod(deliveries=1, ack_seconds=1.0), Pod(deliveries=9, ack_seconds=0.9)
    pods = dict(zip(ORDER_PODS + WEBHOOK_PODS, (order_a, order_b, hook_a, hook_b), strict=True))
    asked: list[tuple[str, int]] = []
    names = {"order-pods.test": list(ORDER_PODS), "webhook-ingest-pods.test": list(WEBHOOK_PODS)}
    async with open_console(console_with, pods, names, asked) as harness:
        await harness.sign_in("sam")
        await harness.console.dashboard.scrape_once()
        order_a.checkouts += 3
        order_b.checkouts += 3
        hook_b.deliveries, hook_b.ack_seconds = 10, 1.0
        await harness.console.dashboard.scrape_once()
        page = (await harness.page("/dashboard")).text

    # the name was resolved on each scrape, and each pod was asked under that name
    assert asked.count(("order-pods.test", 8080)) == 2
    assert order_a.hosts == order_b.hosts == ["order-pods.test:8080"] * 2
    # 3 + 3 checkouts in the interval, out of 56 counted by the two processes since they started
    assert shown(page, "Checkouts created") == "6 last interval · 56 since the pods started"
    # both pods read the same 2 stuck orders from the database: 2, not 4
    assert shown(page, "Stuck orders: paid") == "2"
    # 2.0 s over 11 deliveries of both pods
    assert shown(page, "Webhook ack latency (mean since start)") == f"{2.0 / 11:.3f} s"
    assert shown(page, "Webhook deliveries") == "1 last interval · 11 since the pods started"
    assert "order: 2 of 2 pods" in page and "webhook-ingest: 2 of 2 pods" in page


async def test_an_unreachable_pod_is_named_and_the_others_still_count(console_with: OpenConsole) -> None:
    order_a, order_b = Pod(checkouts=10), Pod(checkouts=40)
    pods = {ORDER_PODS[0]: order_a, ORDER_PODS[1]: order_b}  # 10.1.0.3 resolves but has nothing listening
    names = {"order-pods.test": [*ORDER_PODS, "10.1.0.3"]}
    async with open_console(console_with, pods, names, []) as harness:
        await harness.sign_in("sam")
        board = harness.console.dashboard
        await board.scrape_once()
        order_a.checkouts += 2
        order_b.checkouts += 5
        await board.scrape_once()
        page = (await harness.page("/dashboard")).text

    assert shown(page, "Checkouts created") == "7 last interval · 57 since the pods started"
    assert "order: pod 10.1.0.3:8080 did not answer (ConnectError)" in page
    assert "order: 2 of 3 pods" in page
    # a name that resolves to nothing is a service away, not a broken page
    assert "webhook-ingest: its pods cannot be found (gaierror)" in page


async def test_a_restarted_pod_counts_its_new_total_and_pods_past_the_bound_are_named(
    console_with: OpenConsole,
) -> None:
    order_a, order_b = Pod(checkouts=120), Pod(checkouts=30)
    pods = {ORDER_PODS[0]: order_a, ORDER_PODS[1]: order_b}
    names = {"order-pods.test": [*ORDER_PODS, "10.1.0.9"]}
    async with open_console(console_with, pods, names, [], console_metrics_max_pods=2) as harness:
        await harness.sign_in("sam")
        board = harness.console.dashboard
        await board.scrape_once()
        order_a.checkouts = 4  # restarted, and has taken 4 checkouts since
        order_b.checkouts += 1
        await board.scrape_once()
        page = (await harness.page("/dashboard")).text

    assert shown(page, "Checkouts created") == "5 last interval · 35 since the pods started"
    assert "order: 1 more pods not scraped (limit 2)" in page
    assert "order: 2 of 2 pods" in page


async def test_in_development_the_metrics_address_is_the_service_address_one_pod() -> None:
    settings = ConsoleSettings(environment="development", console_order_url="http://127.0.0.1:8001")
    assert settings.metrics_urls()["order"] == "http://127.0.0.1:8001"
    assert (
        ConsoleSettings(
            environment="development",
            console_order_url="http://127.0.0.1:8001",
            console_order_metrics_url="http://order-pods:8080",
        ).metrics_urls()["order"]
        == "http://order-pods:8080"
    )
    assert await resolve_addresses("127.0.0.1", 8001) == ["127.0.0.1"]


@pytest.mark.parametrize("service", ["order", "payment", "inventory", "webhook_ingest"])
def test_a_metrics_address_that_is_not_http_is_named_in_production(service: str) -> None:
    settings = ConsoleSettings(environment="test", **{f"console_{service}_metrics_url": "order-pods:8080"})
    assert (
        f"HANDSHAKE_CONSOLE_{service.upper()}_METRICS_URL must be an http(s):// URL"
        in settings.configuration_problems()
    )
