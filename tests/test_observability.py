"""Operators can see the money path: every service exports the series the runbooks rely on, and
they move when a checkout goes through."""

from __future__ import annotations

import httpx


def scrape(system, service: str) -> dict[str, float]:
    series: dict[str, float] = {}
    for line in httpx.get(system.url(service) + "/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            series[name] = series.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return series


def test_the_money_path_is_measured_in_every_service(shop, system):
    shop.full_checkout([{"sku": "HS-MUG", "quantity": 1}], key="observed")
    shop.checkout([{"sku": "HS-MUG", "quantity": 1}], key="observed")  # a retry answered from the key
    forged = httpx.post(system.webhook_url, content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
    assert forged.status_code == 400
    run = httpx.post(
        system.url("payment") + "/v1/admin/reconciliation-runs", json={"reason": "observability"}, headers=shop.admin()
    )
    assert run.status_code == 201
    order, payment = scrape(system, "order"), scrape(system, "payment")
    inventory, ingest = scrape(system, "inventory"), scrape(system, "webhook-ingest")

    assert order["handshake_checkouts_created_total"] >= 1
    assert order["handshake_order_transitions_total"] >= 3
    assert order["handshake_idempotency_replays_total"] >= 1
    assert "handshake_orders_stuck" in order
    assert payment["handshake_payment_attempts_total"] >= 1
    assert payment["handshake_reconciliation_runs_total"] >= 1
    assert ingest["handshake_webhook_deliveries_total"] >= 1
    assert ingest["handshake_webhook_rejected_total"] >= 1
    assert ingest["handshake_webhook_ack_seconds_count"] >= 1
    for service in (order, payment, inventory, ingest):
        assert "handshake_outbox_pending" in service  # outbox lag
        assert "handshake_outbox_oldest_pending_seconds" in service
    for service in (order, payment, inventory):  # webhook-ingest consumes nothing
        assert service["handshake_consumer_last_processed_timestamp_seconds"] > 0
    assert inventory["handshake_events_consumed_total"] >= 1
