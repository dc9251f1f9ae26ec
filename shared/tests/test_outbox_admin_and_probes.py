"""The outbox admin routes and the probes every service mounts, on the inventory app in-process against
real PostgreSQL and the real broker."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from prometheus_client import REGISTRY
from sqlalchemy import select

from handshake_devstack.testing.events import payload_on
from handshake_devstack.testing.fixtures import eventually, isolated_kafka_settings, serve_in_process, service_app
from handshake_devstack.tokens import issue_token
from handshake_inventory.app import create_app
from handshake_inventory.db import messaging
from handshake_inventory.settings import InventorySettings
from handshake_shared.kafka import ensure_topics

ob = messaging.outbox


@pytest.fixture
def settings(stack, fresh_database) -> InventorySettings:
    return InventorySettings(
        database_url=fresh_database("handshake_inventory"),
        outbox_max_attempts=2,
        outbox_retry_max_backoff_seconds=0.05,
        **isolated_kafka_settings(stack),
    )


def bearer(settings: InventorySettings, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings, 'ops-1', list(roles))}"}


async def rows(db: Any, key: str) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(ob).where(ob.c.message_key == key).order_by(ob.c.id))).all())


async def test_a_parked_row_is_listed_then_released_by_an_admin_with_a_reason_and_published(settings, stack) -> None:
    """The service's principal may not write one topic (an ACL missing): that order's event is refused until
    parked, and the order's next event waits behind it while another order's goes out. Once the ACL is
    granted, an admin releases the row with a reason; it is published, then the event that waited."""
    denied, allowed = f"test.acl.{uuid.uuid4().hex[:8]}", f"test.ok.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.broker.bootstrap_servers, [denied, allowed], 1)
    app = create_app(settings)
    runtime = app.state.runtime
    acl_granted = False
    real_send = runtime.relay.send

    async def send(topic: str, key: bytes, value: bytes, headers: dict[str, str]):
        if topic == denied and not acl_granted:
            raise TopicAuthorizationFailedError(topic)  # what the client raises for a topic it may not write
        return await real_send(topic, key, value, headers)

    runtime.relay.send = send
    held, other = str(uuid.uuid4()), str(uuid.uuid4())
    parked_before = (
        REGISTRY.get_sample_value("handshake_outbox_rows_parked_total", {"service": "inventory", "topic": denied}) or 0
    )

    async with serve_in_process(app) as client:
        async with runtime.db.transaction() as conn:
            await runtime.outbox.emit(conn, payload_on(denied, "inventory.test")(i=0), order_id=held)
            await runtime.outbox.emit(conn, payload_on(allowed, "inventory.test")(i=1), order_id=held)
            await runtime.outbox.emit(conn, payload_on(allowed, "inventory.test")(i=0), order_id=other)

        async def parked() -> Any:
            first = (await rows(runtime.db, held))[0]
            return first if first.parked_at is not None else None

        row = await eventually(parked)
        assert [r.published_at is not None for r in await rows(runtime.db, other)] == [True]
        assert [r.published_at for r in await rows(runtime.db, held)] == [None, None]  # the next one waits
        assert (
            REGISTRY.get_sample_value("handshake_outbox_rows_parked_total", {"service": "inventory", "topic": denied})
            == parked_before + 1
        )

        path = "/v1/admin/outbox/parked"
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=bearer(settings, "support"))).status_code == 403
        listed = await client.get(path, headers=bearer(settings, "admin"))
        assert listed.status_code == 200
        [item] = listed.json()["items"]
        assert (item["id"], item["topic"], item["key"], item["attempts"]) == (row.id, denied, held, 2)
        assert "TopicAuthorizationFailed" in item["last_error"]

        release = f"/v1/admin/outbox/{row.id}/release"
        reason = {"reason": "ACL for the topic granted, INC-42"}
        assert (await client.post(release, json=reason, headers=bearer(settings, "support"))).status_code == 403
        assert (await client.post(release, json={}, headers=bearer(settings, "admin"))).status_code == 422
        assert (
            await client.post(
                f"/v1/admin/outbox/{row.id + 1000}/release", json=reason, headers=bearer(settings, "admin")
            )
        ).status_code == 404
        acl_granted = True
        released = await client.post(release, json=reason, headers=bearer(settings, "admin"))
        assert released.status_code == 200
        assert (released.json()["released_by"], released.json()["reason"]) == ("ops-1", reason["reason"])

        async def all_published() -> list[Any] | None:
            found = await rows(runtime.db, held)
            return found if all(r.published_at for r in found) else None

        first, second = await eventually(all_published)
        assert first.published_at <= second.published_at and first.parked_at is None
        assert (await client.post(release, json=reason, headers=bearer(settings, "admin"))).status_code == 409
        async with runtime.db.engine.connect() as conn:
            [audit] = (await conn.execute(select(messaging.outbox_releases))).all()
        assert (audit.outbox_id, audit.actor, audit.reason, audit.attempts) == (row.id, "ops-1", reason["reason"], 2)
        assert "TopicAuthorizationFailed" in audit.last_error


async def test_readiness_holds_without_the_broker_and_liveness_fails_when_a_loop_has_ended(settings) -> None:
    app = create_app(settings)
    runtime = app.state.runtime
    async with serve_in_process(app) as client:
        # every background loop of the process is watched, each by its name
        assert (await client.get("/healthz")).json() == {
            "status": "ok",
            "checks": {
                "outbox_relay": "ok",
                "retention": "ok",
                "expiry_sweeper": "ok",
                "gauge_refresher": "ok",
                "consumers": "ok",
            },
        }

        async def broker_gone(timeout: float | None = None) -> bool:
            return False

        real_ping, runtime.broker.ping = runtime.broker.ping, broker_gone
        ready = await client.get("/readyz")
        # the outbox absorbs a broker outage: checkout and webhooks go on, the outbox's age is the alert
        assert ready.status_code == 200 and ready.json()["advisory"]["broker"] == "failed: ConnectionError"
        assert set(ready.json()["advisory"]) == {
            "broker",
            "outbox_relay",
            "retention",
            "expiry_sweeper",
            "gauge_refresher",
        }
        runtime.broker.ping = real_ping

        [consumer_loop] = [t for s in runtime._subscribers for t in s.tasks]
        consumer_loop.cancel()
        await eventually(lambda: _done(consumer_loop))
        live = await client.get("/healthz")
        assert live.status_code == 503 and live.json()["checks"]["consumers"].startswith("failed")
        assert live.json()["checks"]["outbox_relay"] == "ok"

        relay = runtime.loops["outbox_relay"].task
        relay.cancel()
        await eventually(lambda: _done(relay))
        live = await client.get("/healthz")
        assert live.status_code == 503 and live.json()["checks"]["outbox_relay"].startswith("failed")

        # any other loop that has ended is a failed liveness too, the others still answering for themselves
        sweeper = runtime.loops["expiry_sweeper"].task
        sweeper.cancel()
        await eventually(lambda: _done(sweeper))
        live = (await client.get("/healthz")).json()["checks"]
        assert live["expiry_sweeper"].startswith("failed") and live["gauge_refresher"] == "ok"


async def _done(task: Any) -> bool:
    return bool(task.done())


@pytest.mark.parametrize("service", ["order", "payment", "inventory", "webhook_ingest"])
def test_every_service_mounts_the_outbox_admin_routes(service: str) -> None:
    app = service_app(service)
    paths = {(method, path) for path, operations in app.openapi()["paths"].items() for method in operations}
    assert {("get", "/v1/admin/outbox/parked"), ("post", "/v1/admin/outbox/{outbox_id}/release")} <= paths
