"""The command line (token and addresses from the environment, exit status by outcome) and the dashboard's
scrape into bounded rings (several pods: test_dashboard_replicas.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from handshake_console.cli import main
from handshake_console.dashboard import Dashboard
from handshake_console.scrape import PodScrape
from handshake_devstack.tokens import DEV_ISSUER

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

ORDER_ID = "0b0e5f8e-4c1a-4d55-9a53-2b7c1f0a9d11"


def order_service(seen: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "order.test" and request.url.path == f"/v1/admin/orders/{ORDER_ID}":
            return httpx.Response(
                200,
                json={
                    "order_id": ORDER_ID,
                    "state": "fulfillment_pending",
                    "total": 5743,
                    "currency": "EUR",
                    "captured_amount": 5743,
                    "refunded_amount": 0,
                    "timeline": [],
                },
            )
        if request.url.path.endswith("/refunds"):
            return httpx.Response(
                403,
                json={
                    "type": "https://handshake.dev/problems/refund-limit-exceeded",
                    "title": "Refund above your limit",
                    "status": 403,
                    "detail": "support may refund up to 5000 per order; ask finance",
                },
            )
        return httpx.Response(404, json={"type": "about:blank", "title": "Not Found", "status": 404})

    return httpx.MockTransport(answer)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> str:
    token = DEV_ISSUER.issue("sam", ["support"])
    monkeypatch.setenv("HANDSHAKE_CONSOLE_TOKEN", token)
    for service in ("order", "payment", "inventory", "webhook_ingest"):
        monkeypatch.setenv(f"HANDSHAKE_CONSOLE_{service.upper()}_URL", f"http://{service.replace('_', '-')}.test")
    return token


def test_order_prints_the_summary_line_with_the_operators_token(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[httpx.Request] = []
    assert main(["order", ORDER_ID], transport=order_service(seen)) == 0
    out = capsys.readouterr().out
    assert "Charged 57.43 EUR · fulfilment pending · nothing refunded · next: ship the order" in out
    assert "payment attempts: not available: the payment service does not offer this yet" in out
    assert {r.headers["authorization"] for r in seen} == {f"Bearer {environment}"}


def test_a_refusal_prints_the_problem_and_exits_1(environment: str, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[httpx.Request] = []
    code = main(["refund", ORDER_ID, "--amount", "80.00", "--reason", "damaged"], transport=order_service(seen))
    assert code == 1
    err = capsys.readouterr().err
    assert "403 Refund above your limit: support may refund up to 5000 per order; ask finance" in err
    [post] = [r for r in seen if r.method == "POST"]
    assert json.loads(post.content) == {"amount": 8000, "reason": "damaged", "restock": False}
    assert post.headers["idempotency-key"].startswith("cli-")


def test_an_endpoint_not_offered_exits_3_and_no_token_exits_2(
    environment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reconcile", ORDER_ID, "--reason", "provider says paid"], transport=order_service([])) == 3
    monkeypatch.delenv("HANDSHAKE_CONSOLE_TOKEN")
    assert main(["order", ORDER_ID], transport=order_service([])) == 2
    assert "HANDSHAKE_CONSOLE_TOKEN is not set" in capsys.readouterr().err


async def test_dashboard_keeps_a_bounded_ring_and_shows_increases() -> None:
    checkouts = iter([3, 5, 9, 10])
    pod = "127.0.0.1:8001"

    async def scrape(service: str) -> PodScrape | None:
        if service == "order":
            return PodScrape(
                pods=[pod],
                texts={
                    pod: (
                        "# TYPE handshake_checkouts_created_total counter\n"
                        f"handshake_checkouts_created_total {next(checkouts)}\n"
                        "# TYPE handshake_orders_stuck gauge\n"
                        'handshake_orders_stuck{state="paid"} 2\n'
                    )
                },
            )
        if service == "payment":
            raise OSError("name does not resolve")
        return None

    board = Dashboard(scrape, points=2, interval_seconds=60, services=["order", "payment", "inventory"])
    for _ in range(4):
        await board.scrape_once()
    figures: dict[str, Any] = {f["key"]: f for f in board.view()}
    # readings 3, 5, 9, 10 -> increases 2, 4, 1; two points kept
    assert list(board.rings["checkouts"].values) == [4, 1]
    assert figures["checkouts"]["latest"] == 1 and figures["checkouts"]["total"] == 10
    assert figures["stuck_paid"]["latest"] == 2 and figures["stuck_paid"]["link"] == "/search?state=paid&stuck=15"
    assert figures["payments_succeeded"]["latest"] is None
    assert board.last_error == {
        "payment": ["its pods cannot be found (OSError)"],
        "inventory": ["no address configured"],
    }
    assert board.pods == {"order": (1, 1)}
    # the order service's name stops resolving: no pod count is left from the scrape before
    board.scrape = lambda service: scrape("payment")
    await board.scrape_once()
    assert board.pods == {} and board.last_error["order"] == ["its pods cannot be found (OSError)"]
