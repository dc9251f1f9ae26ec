"""Broker wiring: the FastStream Kafka broker, topic creation, and the send function the relay uses."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from handshake_shared.settings import ServiceSettings

log = structlog.get_logger("kafka")

SASL_MECHANISMS: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
    "SCRAM-SHA-512": SASLScram512,
    "SCRAM-SHA-256": SASLScram256,
    "PLAIN": SASLPlaintext,
}


def ssl_context(settings: ServiceSettings) -> ssl.SSLContext:
    # the standard library's defaults: certificate and hostname checks, TLS 1.2 or newer; without a CA
    # file the system's trust store (a cluster with a publicly signed certificate)
    context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_file)
    if settings.kafka_ssl_cert_file:
        context.load_cert_chain(settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file)
    return context


def broker_security(settings: ServiceSettings) -> BaseSecurity | None:
    """TLS and SASL from the settings, in the form FastStream hands to every client it builds."""
    protocol = settings.kafka_security_protocol
    context = ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if not protocol.startswith("SASL_"):
        return None if context is None else BaseSecurity(ssl_context=context, use_ssl=True)
    mechanism = SASL_MECHANISMS.get(settings.kafka_sasl_mechanism.upper())
    if mechanism is None:
        raise ValueError(f"HANDSHAKE_KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}")
    if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
        # relaxed environments skip the settings check; never reach the broker with an empty identity
        raise ValueError("HANDSHAKE_KAFKA_SASL_USERNAME and HANDSHAKE_KAFKA_SASL_PASSWORD are required for SASL")
    return mechanism(
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=context is not None,
    )


def client_security(settings: ServiceSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for a client built outside FastStream (the admin client), through
    FastStream's own translation so they cannot drift from what the producer and consumers get."""
    return parse_security(broker_security(settings))


class GroupsJoinTogetherBroker(KafkaBroker):
    """FastStream's broker, starting its subscribers together instead of one after another. A consumer's start
    waits for its group to be joined, and a coordinator holds a join for a rebalance delay; one after another, a
    service with two or three consumer groups waited that delay two or three times before it was up."""

    async def start(self) -> None:
        # what KafkaBroker.start and BrokerUsecase.start do (faststream 0.7, pinned), the subscribers at once
        await self.connect()
        await asyncio.gather(*(subscriber.start() for subscriber in self.subscribers))
        for publisher in self.publishers:
            await publisher.start()
        self.running = True


def make_broker(settings: ServiceSettings, client_id: str) -> KafkaBroker:
    return GroupsJoinTogetherBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id + settings.kafka_client_id_suffix,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        request_timeout_ms=10_000,
        retry_backoff_ms=200,
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        security=broker_security(settings),
        logger=None,
        # FastStream would add a `correlation_id` header of its own to every message it publishes; our
        # messages are CloudEvents in structured mode, identified and correlated by their body's `id` and
        # `correlationid`, so the only headers are the ones the envelope sets (envelope.kafka_headers)
        id_generator=_no_correlation_id,
    )


def _no_correlation_id() -> str:
    return ""


def relay_sender(broker: KafkaBroker):  # type: ignore[no-untyped-def]
    async def send(topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> asyncio.Future[Any]:
        return await broker.publish(value, topic=topic, key=key, headers=headers, no_confirm=True)

    return send


async def ensure_topics(
    bootstrap_servers: str, topics: Iterable[str], partitions: int, *, security: Mapping[str, Any] | None = None
) -> None:
    """`security`: `client_security(settings)`; absent, a plaintext connection."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000, **(security or {}))
    await admin.start()
    try:
        topics = list(topics)
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("topics created", topics=[t.name for t in missing], partitions=partitions)
        # an empty list would describe every topic on the cluster
        described = await admin.describe_topics(present) if (present := [t for t in topics if t in existing]) else []
        other = sorted(d["topic"] for d in described if len(d["partitions"]) != partitions)
        if other:
            # e.g. auto-created by a producer that reached the broker first; per-key order still holds
            log.warning("topics exist with another partition count", topics=other, wanted=partitions)
    finally:
        await admin.close()
