"""Broker wiring: the FastStream Kafka broker, topic creation, and the send function the relay uses."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from handshake_shared.settings import ServiceSettings

log = structlog.get_logger("kafka")


def make_broker(settings: ServiceSettings, client_id: str) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id + settings.kafka_client_id_suffix,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        request_timeout_ms=10_000,
        retry_backoff_ms=200,
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        logger=None,
    )


def relay_sender(broker: KafkaBroker):  # type: ignore[no-untyped-def]
    async def send(topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> asyncio.Future[Any]:
        return await broker.publish(value, topic=topic, key=key, headers=headers, no_confirm=True)

    return send


async def ensure_topics(bootstrap_servers: str, topics: Iterable[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        topics = list(topics)
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            log.info("topics created", topics=[t.name for t in missing], partitions=partitions)
        described = await admin.describe_topics([t for t in topics if t in existing])
        other = sorted(d["topic"] for d in described if len(d["partitions"]) != partitions)
        if other:
            # e.g. auto-created by a producer that reached the broker first; per-key order still holds
            log.warning("topics exist with another partition count", topics=other, wanted=partitions)
    finally:
        await admin.close()
