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
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from handshake_devstack.testing.fixtures import eventually, isolated_kafka_settings, service_app
from handshake_devstack.tokens import issue_token
from handshake_inventory.app import create_app
from handshake_inventory.db import messaging
from handshake_inventory.settings import InventorySettings
from handshake_shared.consumer import RawMessage
from handshake_shared.envelope import build_event, parse_event
from handshake_shared.events.order import OrderPlaced

GROUP = "inventory.order-events"
REASON = {"reason": "label printer back, INC-77"}


@pytest.fixture
def settings(stack, fresh_database) -> InventorySettings:
    return InventorySettings(
        database_url=fresh_database("handshake_inventory"),
        consumer_max_attempts=1,
        **isolated_kafka_settings(stack),
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
    event = build_event(
        service="order",
        type="order.placed",
        order_id=order_id,
        sequence=1,
        data={"order_id": order_id, "currency": "EUR", "total": 100, "lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}]},
    )
    return RawMessage(
        topic="order.events.v1", partition=0, offset=offset, key=order_id.encode(), value=event.to_bytes()
    )


async def rejections(db: Any, order_id: str) -> int:
    ob = messaging.outbox
    async with db.engine.connect() as conn:
        return (
            await conn.execute(
                select(func.count())
                .select_from(ob)
                .where(ob.c.event_type == "inventory.rejected", ob.c.message_key == order_id)
            )
        ).scalar_one()


def consumer_of(runtime: Any) -> Any:
    return next(c for c in runtime.consumers if c.name == GROUP)


async def test_a_dead_letter_is_listed_then_redriven_once_through_its_consumer_and_audited(settings) -> None:
    app = create_app(settings)
    runtime = app.state.runtime
    consumer = consumer_of(runtime)
    real = consumer.handlers[OrderPlaced]
    calls = 0

    async def broken(conn, event, payload):
        raise RuntimeError("label printer unreachable")

    async def fixed(conn, event, payload):
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)  # both redrives are in flight at once
        await real(conn, event, payload)

    order_id = str(uuid.uuid4())
    async with admin_api(app) as client:
        consumer.handlers[OrderPlaced] = broken
        msg = placed(order_id)
        assert await consumer.handle(msg) == "dead_lettered"
        # the broker delivering it again does nothing: the dead letter holds it for a person
        assert await consumer.handle(msg) == "duplicate"
        consumer.handlers[OrderPlaced] = fixed

        path = "/v1/admin/dead-letters"
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=bearer(settings, "support"))).status_code == 403
        listed = await client.get(path, params={"consumer": GROUP}, headers=bearer(settings, "admin"))
        assert listed.status_code == 200, listed.text
        [item] = listed.json()["items"]
        assert (item["consumer"], item["key"], item["event_type"], item["resolved_at"]) == (
            GROUP,
            order_id,
            "order.placed",
            None,
        )
        assert "label printer unreachable" in item["error"] and "payload" not in item
        assert (await client.get(path, params={"consumer": "someone-else"}, headers=bearer(settings, "admin"))).json()[
            "items"
        ] == []

        redrive = f"{path}/{item['id']}/redrive"
        assert (await client.post(redrive, json=REASON, headers=bearer(settings))).status_code == 403  # not staff
        assert (await client.post(redrive, json={}, headers=bearer(settings, "support"))).status_code == 422
        assert (
            await client.post(f"{path}/{item['id'] + 1000}/redrive", json=REASON, headers=bearer(settings, "admin"))
        ).status_code == 404
        assert await rejections(runtime.db, order_id) == 0

        # any staff member may ask for a message to be applied again: support and an admin at once, one applies
        first, second = await asyncio.gather(
            client.post(redrive, json=REASON, headers=bearer(settings, "support")),
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
        [done] = (await client.get(path, params={"status": "redriven"}, headers=bearer(settings, "admin"))).json()[
            "items"
        ]
        assert done["id"] == item["id"] and done["resolved_at"] is not None
        async with runtime.db.engine.connect() as conn:
            [audit] = (await conn.execute(select(messaging.dead_letter_redrives))).all()
        assert (audit.dead_letter_id, audit.consumer, audit.actor, audit.reason, audit.outcome) == (
            item["id"],
            GROUP,
            "ops-1",
            REASON["reason"],
            "applied",
        )
        assert audit.event_id == item["event_id"]


async def test_a_failing_redrive_changes_nothing_and_can_be_tried_again(settings) -> None:
    app = create_app(settings)
    runtime = app.state.runtime
    consumer = consumer_of(runtime)
    real = consumer.handlers[OrderPlaced]

    async def broken(conn, event, payload):
        await real(conn, event, payload)  # its writes must not survive the failure
        raise RuntimeError("still broken")

    order_id = str(uuid.uuid4())
    async with admin_api(app) as client:
        consumer.handlers[OrderPlaced] = broken
        assert await consumer.handle(placed(order_id)) == "dead_lettered"
        [item] = (await client.get("/v1/admin/dead-letters", headers=bearer(settings, "admin"))).json()["items"]
        redrive = f"/v1/admin/dead-letters/{item['id']}/redrive"
        failed = await client.post(redrive, json=REASON, headers=bearer(settings, "admin"))
        assert failed.status_code == 409 and "still broken" in failed.json()["detail"]
        assert await rejections(runtime.db, order_id) == 0
        async with runtime.db.engine.connect() as conn:
            assert (
                await conn.execute(select(func.count()).select_from(messaging.dead_letter_redrives))
            ).scalar_one() == 0

        consumer.handlers[OrderPlaced] = real
        retried = await client.post(redrive, json=REASON, headers=bearer(settings, "admin"))
        assert retried.status_code == 200 and retried.json()["outcome"] == "applied"
        assert await rejections(runtime.db, order_id) == 1


async def test_redriving_a_message_that_was_applied_before_applies_nothing(settings) -> None:
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
        redriven = await client.post(
            f"/v1/admin/dead-letters/{item['id']}/redrive", json=REASON, headers=bearer(settings, "admin")
        )
        assert redriven.status_code == 200 and redriven.json()["outcome"] == "already_applied"
        assert await rejections(runtime.db, order_id) == 1


@pytest.mark.parametrize(
    ("service", "own_jobs"),
    [
        ("order", set()),
        ("payment", {"reconciliation_runs", "idempotency_keys"}),
        ("inventory", set()),
        ("webhook_ingest", {"provider_events_scrub", "provider_event_gap_scans"}),
    ],
)
def test_every_service_mounts_the_dead_letter_routes_and_runs_retention_over_its_tables(
    service: str, own_jobs: set[str]
) -> None:
    app = service_app(service)
    paths = {(method, path) for path, operations in app.openapi()["paths"].items() for method in operations}
    assert {
        ("get", "/v1/admin/dead-letters"),
        ("post", "/v1/admin/dead-letters/{dead_letter_id}/redrive"),
        ("post", "/v1/admin/dead-letters/{dead_letter_id}/discard"),
    } <= paths
    retention = app.state.runtime.retention
    assert retention.enabled
    assert {job.name for job in retention.jobs} == {"outbox", "inbox", "dead_letters"} | own_jobs


async def test_the_listing_pages_newest_first_and_filters(settings) -> None:
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


PROBLEM = "https://handshake.dev/problems/"
PATH = "/v1/admin/dead-letters"


async def dead_lettered(consumer: Any, order_id: str, error: str, offset: int = 7) -> RawMessage:
    msg = placed(order_id, offset)
    await consumer.dead_letter(msg, parse_event(msg.value), error, attempts=1)
    return msg


async def listed(client: httpx.AsyncClient, settings: InventorySettings, **params: str) -> list[dict[str, Any]]:
    answer = await client.get(PATH, params=params, headers=bearer(settings, "admin"))
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def inbox_rows(db: Any, event_id: str) -> list[Any]:
    inbox = messaging.inbox
    async with db.engine.connect() as conn:
        return (
            await conn.execute(select(inbox).where(inbox.c.consumer == GROUP, inbox.c.event_id == uuid.UUID(event_id)))
        ).all()


async def audit_rows(db: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return (await conn.execute(select(messaging.dead_letter_redrives))).all()


async def test_a_dead_letter_is_discarded_once_audited_and_nothing_is_applied(settings) -> None:
    app = create_app(settings)
    runtime = app.state.runtime
    consumer = consumer_of(runtime)  # its real handler stays: applying the message would announce a rejection
    order_id = str(uuid.uuid4())
    async with admin_api(app) as client:
        msg = await dead_lettered(consumer, order_id, "order for a warehouse that closed")
        admin, path = bearer(settings, "admin"), PATH
        [item] = await listed(client, settings)
        discard = f"{path}/{item['id']}/discard"

        assert (await client.post(discard, json=REASON)).status_code == 401
        refused = await client.post(discard, json=REASON, headers=bearer(settings, "support"))
        assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
        assert (await client.post(discard, json={}, headers=admin)).status_code == 422
        unknown = await client.post(f"{path}/{item['id'] + 1000}/discard", json=REASON, headers=admin)
        assert unknown.status_code == 404 and unknown.json()["type"] == PROBLEM + "dead-letter-not-found"
        assert await listed(client, settings) == [item]  # the refusals resolved nothing

        first, second = await asyncio.gather(
            client.post(discard, json=REASON, headers=admin), client.post(discard, json=REASON, headers=admin)
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
        answer, other = (first, second) if first.status_code == 200 else (second, first)
        assert (answer.json()["outcome"], answer.json()["discarded_by"], answer.json()["reason"]) == (
            "discarded",
            "ops-1",
            REASON["reason"],
        )
        assert answer.json()["resolved_at"] is not None
        assert other.json()["type"] == PROBLEM + "dead-letter-already-discarded"

        # nothing applied: no rejection announced, and the only inbox row is the dead letter's own
        assert await rejections(runtime.db, order_id) == 0
        [own] = await inbox_rows(runtime.db, item["event_id"])
        assert own.processed_at.isoformat() == item["created_at"]
        # the broker delivering the message again still does nothing
        assert await consumer.handle(msg) == "duplicate"
        assert await rejections(runtime.db, order_id) == 0

        again = await client.post(discard, json=REASON, headers=admin)
        assert again.status_code == 409 and again.json()["type"] == PROBLEM + "dead-letter-already-discarded"
        redrive = await client.post(f"{path}/{item['id']}/redrive", json=REASON, headers=admin)
        assert redrive.status_code == 409 and redrive.headers["content-type"] == "application/problem+json"
        assert redrive.json()["type"] == PROBLEM + "dead-letter-already-discarded"
        assert await rejections(runtime.db, order_id) == 0

        [audit] = await audit_rows(runtime.db)
        assert (audit.dead_letter_id, audit.consumer, audit.event_id, audit.actor, audit.reason, audit.outcome) == (
            item["id"],
            GROUP,
            item["event_id"],
            "ops-1",
            REASON["reason"],
            "discarded",
        )
        assert await listed(client, settings) == [] and await listed(client, settings, status="redriven") == []
        assert [i["id"] for i in await listed(client, settings, status="discarded")] == [item["id"]]


async def test_a_redriven_dead_letter_cannot_be_discarded(settings) -> None:
    app = create_app(settings)
    runtime = app.state.runtime
    order_id = str(uuid.uuid4())
    async with admin_api(app) as client:
        await dead_lettered(consumer_of(runtime), order_id, "label printer unreachable")
        admin, path = bearer(settings, "admin"), PATH
        [item] = await listed(client, settings)
        redriven = await client.post(f"{path}/{item['id']}/redrive", json=REASON, headers=admin)
        assert redriven.status_code == 200 and redriven.json()["outcome"] == "applied"
        discarded = await client.post(f"{path}/{item['id']}/discard", json=REASON, headers=admin)
        assert discarded.status_code == 409 and discarded.json()["type"] == PROBLEM + "dead-letter-already-redriven"
        assert [a.outcome for a in await audit_rows(runtime.db)] == ["applied"]
        assert await rejections(runtime.db, order_id) == 1
        assert await listed(client, settings, status="discarded") == []
        assert [i["id"] for i in await listed(client, settings, status="redriven")] == [item["id"]]


async def test_a_message_that_is_not_an_event_cannot_be_redriven_but_is_discarded(settings) -> None:
    app = create_app(settings)
    consumer = consumer_of(app.state.runtime)
    async with admin_api(app) as client:
        garbage = RawMessage(topic="order.events.v1", partition=0, offset=9, key=b"k", value=b"\xff not an event")
        assert await consumer.handle(garbage) == "dead_lettered"
        admin, path = bearer(settings, "admin"), PATH
        [item] = await listed(client, settings)
        assert item["event_id"] is None
        redrive = await client.post(f"{path}/{item['id']}/redrive", json=REASON, headers=admin)
        assert redrive.status_code == 409 and redrive.json()["type"] == PROBLEM + "dead-letter-not-redrivable"
        discarded = await client.post(f"{path}/{item['id']}/discard", json=REASON, headers=admin)
        assert discarded.status_code == 200 and discarded.json()["outcome"] == "discarded"
        [audit] = await audit_rows(app.state.runtime.db)
        assert (audit.dead_letter_id, audit.event_id, audit.outcome) == (item["id"], None, "discarded")


async def open_dead_letters(client: httpx.AsyncClient) -> float | None:
    """The gauge as Prometheus scrapes it from the service."""
    scraped = (await client.get("/metrics")).text
    return next(
        (
            s.value
            for f in text_string_to_metric_families(scraped)
            for s in f.samples
            if s.name == "handshake_dead_letters_open" and s.labels == {"consumer": GROUP}
        ),
        None,
    )


async def test_the_relay_keeps_the_open_dead_letter_gauge_counting_down_as_they_are_resolved(settings) -> None:
    app = create_app(settings)
    runtime = app.state.runtime
    consumer = consumer_of(runtime)
    async with admin_api(app) as client:
        for offset in (1, 2, 3):
            await dead_lettered(consumer, str(uuid.uuid4()), f"failure {offset}", offset)
        # their <topic>.dlq copies count as sent: the relay's round then finds nothing to publish (its broker is
        # not started here), and what is left to see is its reading of the gauges after every round
        ob = messaging.outbox
        async with runtime.db.transaction() as conn:
            await conn.execute(update(ob).values(published_at=func.now()))
        runtime.relay.gauge_interval = 0
        relay = asyncio.create_task(runtime.relay.run())
        try:

            async def shows(count: int) -> bool:
                return await open_dead_letters(client) == count

            await eventually(lambda: shows(3))
            admin, path = bearer(settings, "admin"), PATH
            newest, older, _ = await listed(client, settings)
            assert (await client.post(f"{path}/{newest['id']}/discard", json=REASON, headers=admin)).status_code == 200
            await eventually(lambda: shows(2))
            assert (await client.post(f"{path}/{older['id']}/redrive", json=REASON, headers=admin)).status_code == 200
            async with runtime.db.transaction() as conn:  # the redrive's inventory.rejected, as above
                await conn.execute(update(ob).values(published_at=func.now()))
            await eventually(lambda: shows(1))
        finally:
            runtime.relay.stop()
            await relay
