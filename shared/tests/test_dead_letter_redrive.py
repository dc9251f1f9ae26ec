"""Dead letters listed and redriven by an admin through the consumer's own handler, audited, exactly once;
on the inventory app in-process against real PostgreSQL. Its consumers are not subscribed (no lifespan): the
tests hand messages to the consumer themselves, so nothing else on the broker reaches it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from handshake_devstack.testing.fixtures import isolated_kafka_settings
from handshake_devstack.tokens import issue_token
from handshake_inventory.app import create_app
from handshake_inventory.db import messaging
from handshake_inventory.settings import InventorySettings
from handshake_shared.consumer import RawMessage
from handshake_shared.envelope import build_event, parse_event

GROUP = "inventory.order-events"
REASON = {"reason": "label printer back, INC-77"}


@pytest.fixture
def settings(stack, fresh_database) -> InventorySettings:  # type: ignore[no-untyped-def]
    return InventorySettings(
        database_url=fresh_database("handshake_inventory"),
        consumer_max_attempts=1,
        **isolated_kafka_settings(stack),  # type: ignore[arg-type]
    )


@asynccontextmanager
async def admin_api(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            yield client
    finally:
        await app.state.runtime.db.dispose()


def bearer(settings: InventorySettings, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings, 'ops-1', list(roles))}"}


def placed(order_id: str, offset: int = 7) -> RawMessage:
    # a SKU the inventory does not stock: applying it announces exactly one inventory.rejected
    event = build_event(service="order", type="order.placed", order_id=order_id, sequence=1,
                        data={"order_id": order_id, "currency": "EUR", "total": 100,
                              "lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}]})  # fmt: skip
    return RawMessage(topic="order.events.v1", partition=0, offset=offset, key=order_id.encode(), value=event.to_bytes())


async def rejections(db: Any, order_id: str) -> int:
    ob = messaging.outbox
    async with db.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(ob).where(
            ob.c.event_type == "inventory.rejected", ob.c.message_key == order_id))).scalar_one()  # fmt: skip


def consumer_of(runtime: Any) -> Any:
    return next(c for c in runtime.consumers if c.name == GROUP)


async def test_a_dead_letter_is_listed_then_redriven_once_through_its_consumer_and_audited(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    runtime = app.state.runtime
    consumer = consumer_of(runtime)
    real = consumer.handlers["order.placed"]
    calls = 0

    async def broken(conn, event, payload):  # type: ignore[no-untyped-def]
        raise RuntimeError("label printer unreachable")

    async def fixed(conn, event, payload):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)  # both redrives are in flight at once
        await real(conn, event, payload)

    order_id = str(uuid.uuid4())
    async with admin_api(app) as client:
        consumer.handlers["order.placed"] = broken
        msg = placed(order_id)
        assert await consumer.handle(msg) == "dead_lettered"
        # the broker delivering it again does nothing: the dead letter holds it for a person
        assert await consumer.handle(msg) == "duplicate"
        consumer.handlers["order.placed"] = fixed

        path = "/v1/admin/dead-letters"
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=bearer(settings, "support"))).status_code == 403
        listed = await client.get(path, params={"consumer": GROUP}, headers=bearer(settings, "admin"))
        assert listed.status_code == 200, listed.text
        [item] = listed.json()["items"]
        assert (item["consumer"], item["key"], item["event_type"], item["resolved_at"]) == (GROUP, order_id, "order.placed", None)
        assert "label printer unreachable" in item["error"] and "payload" not in item
        assert (await client.get(path, params={"consumer": "someone-else"}, headers=bearer(settings, "admin"))).json()["items"] == []

        redrive = f"{path}/{item['id']}/redrive"
        assert (await client.post(redrive, json=REASON, headers=bearer(settings, "support"))).status_code == 403
        assert (await client.post(redrive, json={}, headers=bearer(settings, "admin"))).status_code == 422
        assert (await client.post(f"{path}/{item['id'] + 1000}/redrive", json=REASON,
                                  headers=bearer(settings, "admin"))).status_code == 404  # fmt: skip
        assert await rejections(runtime.db, order_id) == 0

        first, second = await asyncio.gather(
            client.post(redrive, json=REASON, headers=bearer(settings, "admin")),
            client.post(redrive, json=REASON, headers=bearer(settings, "admin")),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
        answer = (first if first.status_code == 200 else second).json()
        assert (answer["outcome"], answer["redriven_by"], answer["reason"]) == ("applied", "ops-1", REASON["reason"])
        assert answer["resolved_at"] is not None
        assert calls == 1 and await rejections(runtime.db, order_id) == 1

        again = await client.post(redrive, json=REASON, headers=bearer(settings, "admin"))
        assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
        assert calls == 1 and await rejections(runtime.db, order_id) == 1
        # the broker bringing the message again still does nothing
        assert await consumer.handle(msg) == "duplicate"
        assert await rejections(runtime.db, order_id) == 1

        assert (await client.get(path, headers=bearer(settings, "admin"))).json()["items"] == []
        [done] = (await client.get(path, params={"status": "redriven"}, headers=bearer(settings, "admin"))).json()["items"]
        assert done["id"] == item["id"] and done["resolved_at"] is not None
        async with runtime.db.engine.connect() as conn:
            [audit] = (await conn.execute(select(messaging.dead_letter_redrives))).all()
        assert (audit.dead_letter_id, audit.consumer, audit.actor, audit.reason, audit.outcome) == (
            item["id"], GROUP, "ops-1", REASON["reason"], "applied")  # fmt: skip
        assert audit.event_id == item["event_id"]


async def test_a_failing_redrive_changes_nothing_and_can_be_tried_again(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    runtime = app.state.runtime
    consumer = consumer_of(runtime)
    real = consumer.handlers["order.placed"]

    async def broken(conn, event, payload):  # type: ignore[no-untyped-def]
        await real(conn, event, payload)  # its writes must not survive the failure
        raise RuntimeError("still broken")

    order_id = str(uuid.uuid4())
    async with admin_api(app) as client:
        consumer.handlers["order.placed"] = broken
        assert await consumer.handle(placed(order_id)) == "dead_lettered"
        [item] = (await client.get("/v1/admin/dead-letters", headers=bearer(settings, "admin"))).json()["items"]
        redrive = f"/v1/admin/dead-letters/{item['id']}/redrive"
        failed = await client.post(redrive, json=REASON, headers=bearer(settings, "admin"))
        assert failed.status_code == 409 and "still broken" in failed.json()["detail"]
        assert await rejections(runtime.db, order_id) == 0
        async with runtime.db.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(messaging.dead_letter_redrives))).scalar_one() == 0

        consumer.handlers["order.placed"] = real
        retried = await client.post(redrive, json=REASON, headers=bearer(settings, "admin"))
        assert retried.status_code == 200 and retried.json()["outcome"] == "applied"
        assert await rejections(runtime.db, order_id) == 1


async def test_redriving_a_message_that_was_applied_before_applies_nothing(settings) -> None:  # type: ignore[no-untyped-def]
    """A message applied once and dead-lettered on a later delivery (its payload no longer read by newer code,
    say): the inbox shows it applied, so the redrive resolves the dead letter and runs nothing."""
    app = create_app(settings)
    runtime = app.state.runtime
    consumer = consumer_of(runtime)
    order_id = str(uuid.uuid4())
    async with admin_api(app) as client:
        msg = placed(order_id)
        assert await consumer.handle(msg) == "applied"
        await consumer.dead_letter(msg, parse_event(msg.value), "invalid payload: a later reading", attempts=1)
        assert await rejections(runtime.db, order_id) == 1
        [item] = (await client.get("/v1/admin/dead-letters", headers=bearer(settings, "admin"))).json()["items"]
        redriven = await client.post(f"/v1/admin/dead-letters/{item['id']}/redrive", json=REASON,
                                     headers=bearer(settings, "admin"))  # fmt: skip
        assert redriven.status_code == 200 and redriven.json()["outcome"] == "already_applied"
        assert await rejections(runtime.db, order_id) == 1


@pytest.mark.parametrize(
    ("service", "own_jobs"),
    [("order", set()), ("payment", {"reconciliation_runs"}), ("inventory", set()),
     ("webhook_ingest", {"provider_events_scrub", "provider_event_gap_scans"})],
)  # fmt: skip
def test_every_service_mounts_the_dead_letter_routes_and_runs_retention_over_its_tables(service: str, own_jobs: set[str]) -> None:
    import importlib

    app_module = importlib.import_module(f"handshake_{service}.app")
    settings_module = importlib.import_module(f"handshake_{service}.settings")
    settings_class = next(
        v for k, v in vars(settings_module).items() if k.endswith("Settings") and getattr(v, "__module__", "") == settings_module.__name__
    )
    app = app_module.create_app(settings_class())
    paths = {(method, path) for path, operations in app.openapi()["paths"].items() for method in operations}
    assert {("get", "/v1/admin/dead-letters"), ("post", "/v1/admin/dead-letters/{dead_letter_id}/redrive")} <= paths
    retention = app.state.runtime.retention
    assert retention.enabled
    assert {job.name for job in retention.jobs} == {"outbox", "inbox", "dead_letters"} | own_jobs


async def test_the_listing_pages_newest_first_and_filters(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    consumer = consumer_of(app.state.runtime)
    async with admin_api(app) as client:
        for offset in (1, 2, 3):
            msg = placed(str(uuid.uuid4()), offset=offset)
            await consumer.dead_letter(msg, parse_event(msg.value), f"failure {offset}", attempts=1)
        path, admin = "/v1/admin/dead-letters", bearer(settings, "admin")
        first = (await client.get(path, params={"limit": 2}, headers=admin)).json()
        assert [i["offset"] for i in first["items"]] == [3, 2] and first["next_before_id"] == first["items"][-1]["id"]
        rest = (await client.get(path, params={"limit": 2, "before_id": first["next_before_id"]}, headers=admin)).json()
        assert [i["offset"] for i in rest["items"]] == [1] and rest["next_before_id"] is None
        assert (await client.get(path, params={"event_type": "order.paid"}, headers=admin)).json()["items"] == []
        assert (await client.get(path, params={"status": "redriven"}, headers=admin)).json()["items"] == []
        assert (await client.get(path, params={"limit": 0}, headers=admin)).status_code == 422
