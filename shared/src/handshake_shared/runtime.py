"""One service's moving parts in one process: database, broker, consumers and the outbox relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage

from handshake_shared import metrics
from handshake_shared.body_limit import BodySizeLimit
from handshake_shared.consumer import DeadLetterHook, EventConsumer, Handlers, RawMessage, RetryPolicy
from handshake_shared.db import Database, MessagingTables
from handshake_shared.dead_letter_admin import OpenDeadLetters, dead_letter_admin_router
from handshake_shared.http import HealthChecks, InternalListener, install_problem_handlers, ops_router
from handshake_shared.kafka import make_broker, relay_sender
from handshake_shared.loops import BackgroundLoops
from handshake_shared.outbox import Outbox, OutboxRelay
from handshake_shared.outbox_admin import outbox_admin_router
from handshake_shared.retention import Retention, messaging_jobs
from handshake_shared.settings import ServiceSettings

log = structlog.get_logger("runtime")


class Runtime:
    def __init__(self, *, service: str, settings: ServiceSettings, tables: MessagingTables) -> None:
        self.service = service
        self.settings = settings
        self.tables = tables
        self.db = Database(
            settings.database_url.get_secret_value(),
            pool_size=settings.db_pool_size,
            statement_timeout_ms=settings.db_statement_timeout_ms,
            lock_timeout_ms=settings.db_lock_timeout_ms,
            idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout_ms,
        )
        self.broker = make_broker(settings, client_id=f"handshake-{service}")
        self.outbox = Outbox(tables, service)
        self.relay = OutboxRelay(
            self.db,
            tables,
            relay_sender(self.broker),
            service=service,
            batch_size=settings.outbox_batch_size,
            idle_poll_seconds=settings.outbox_idle_poll_seconds,
            max_attempts=settings.outbox_max_attempts,
            retry_max_backoff_seconds=settings.outbox_retry_max_backoff_seconds,
            slow_send_seconds=settings.outbox_slow_send_seconds,
            broker_reachable=lambda: self.broker.ping(timeout=2.0),
            # consumers are added after the relay is built, so their names are looked up at each reading
            gauges=[OpenDeadLetters(tables, lambda: [c.name for c in self.consumers]).read],
        )
        self.retry_policy = RetryPolicy(
            max_attempts=settings.consumer_max_attempts,
            initial_backoff=settings.consumer_initial_backoff_seconds,
            max_backoff=settings.consumer_max_backoff_seconds,
            max_deferrals=settings.consumer_max_deferrals,
        )
        self.consumers: list[EventConsumer] = []
        # messages handled at once by all of this process's consumers (EventConsumer says why a quarter of the pool)
        self.in_flight = asyncio.Semaphore(max(1, settings.db_pool_size // 4))
        # the broker's consumer loops (one task list per subscriber), watched by liveness
        self._subscribers: list[Any] = []
        # every background loop of the process, the relay's first; a service adds its own (runtime.loops.add)
        # before start, and they start, report to the probes and stop together
        self.loops = BackgroundLoops()
        self.loops.add(self.relay.loop)
        # the messaging tables' jobs; a service adds its own tables' (runtime.retention.add) before start
        self.retention = Retention(
            self.db, interval_seconds=settings.retention_interval_seconds, batch_size=settings.retention_batch_size
        )
        self.retention.add(*messaging_jobs(tables, settings))

    def consume(
        self, topic: str, *, group: str, handlers: Handlers, on_dead_letter: DeadLetterHook | None = None
    ) -> EventConsumer:
        consumer = EventConsumer(
            name=group,
            db=self.db,
            tables=self.tables,
            outbox=self.outbox,
            handlers=handlers,
            policy=self.retry_policy,
            on_dead_letter=on_dead_letter,
            in_flight=self.in_flight,
        )
        subscriber = self.broker.subscriber(
            topic,
            group_id=self.settings.kafka_group_prefix + group,
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
            batch=True,
            max_records=self.settings.kafka_max_batch_records,
            batch_timeout_ms=self.settings.kafka_batch_wait_ms,
            # The batch's offsets are committed only after the handler returned, i.e. after every message's
            # database commit. An exception (a dependency is down) rewinds each partition to the batch's first
            # message: the broker delivers them again and the inbox answers the ones already applied.
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )

        @subscriber
        async def on_batch(message: KafkaMessage) -> None:
            records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
            await consumer.handle_batch(
                [
                    RawMessage(
                        topic=raw.topic, partition=raw.partition, offset=raw.offset, key=raw.key, value=raw.value
                    )
                    for raw in records
                ]
            )
            metrics.OFFSET_COMMITS.labels(consumer.name).inc()

        self.consumers.append(consumer)
        self._subscribers.append(subscriber)
        return consumer

    async def start(self) -> None:
        await self.broker.start()
        self._add_retention()
        self.loops.start()

    def _add_retention(self) -> None:
        # once its jobs are known: a service adds them after the runtime is built
        if self.retention.enabled and self.retention.loop.name not in self.loops:
            self.loops.add(self.retention.loop)

    async def stop(self) -> None:
        # each loop's iteration in flight finishes its short transaction first, within the loop's grace
        await self.loops.stop()
        await self.broker.stop()
        await self.db.dispose()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """The lifespan of a service whose runtime (its consumers and background loops) is all it runs."""
        async with self.running():
            yield

    def http_app(
        self,
        title: str,
        *,
        lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
        body_limits: Mapping[str, int] | None = None,
    ) -> FastAPI:
        """The service's HTTP app with what every service serves alike: problem answers, `/internal/...`
        routes answered only on the internal port, the request body limit (`body_limits`: other limits for some
        paths), the probes, and the outbox and dead-letter admin. The service adds its state, middleware and
        routes; build it after the service's loops and retention jobs are added, which the probes read here."""
        app = FastAPI(title=title, version="1", lifespan=lifespan or self.lifespan)
        app.state.runtime = self
        install_problem_handlers(app)
        app.add_middleware(InternalListener, internal_port=self.settings.internal_http_port)
        app.add_middleware(BodySizeLimit, max_bytes=self.settings.http_max_body_bytes, routes=body_limits)
        app.include_router(ops_router(self.readiness_checks()))
        app.include_router(self.outbox_admin_router())
        app.include_router(self.dead_letter_admin_router())
        return app

    def outbox_admin_router(self) -> APIRouter:
        """The admin routes over this service's outbox (parked rows, audited release)."""
        return outbox_admin_router(self)

    def dead_letter_admin_router(self) -> APIRouter:
        """The admin routes over this service's dead letters (list, audited redrive through the consumer or
        discard)."""
        return dead_letter_admin_router(self)

    def readiness_checks(self) -> HealthChecks:
        """What the probes ask. Ready: the database answers and the relay runs. The broker is advisory only:
        while it is away, checkout and webhooks still commit to the database and the outbox keeps their events
        (the outbox's age is the alert), so taking every pod out of rotation would only turn an absorbed outage
        into a full one. Live: the relay and every consumer loop are still running; one that has ended never
        comes back by itself, so the pod must be restarted; the same for every background loop. A background
        loop that is backing off after a failed iteration is advisory: an outage is not repaired by a restart."""

        async def broker() -> None:
            if not await self.broker.ping(timeout=1.0):
                raise ConnectionError("broker unreachable")

        def ending(task: asyncio.Task[None]) -> bool:
            return task.done() or task.cancelling() > 0  # cancelled: it may still be unwinding

        async def outbox_relay() -> None:
            # it only ends on shutdown; anything else is a bug to see at once
            if not self.relay.loop.running:
                raise RuntimeError("outbox relay is not running")

        async def consumers_alive() -> None:
            ended = [t.get_name() for s in self._subscribers for t in getattr(s, "tasks", []) if ending(t)]
            if ended:
                raise RuntimeError(f"consumer loops have ended: {ended}")

        self._add_retention()
        return HealthChecks(
            {"database": self.db.ping, "outbox_relay": outbox_relay},
            liveness={**self.loops.liveness(), "consumers": consumers_alive},
            advisory={"broker": broker, **self.loops.advisory()},
        )
