"""TLS and SASL settings reach every Kafka client: the FastStream producer and consumers, and the admin client.

TLS runs for real: the embedded broker in TLS mode (mutual TLS, certificates made here). SASL cannot: Tansu
0.6 with memory storage keeps no SCRAM users, so SASL is checked on the aiokafka clients FastStream builds,
and on the wire up to the point where the client asks the broker for SCRAM-SHA-512 after the TLS handshake."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faststream._internal.utils.data import filter_by_dict
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.schemas.params import AdminClientConnectionParams

from handshake_devstack.broker import BrokerTls, EmbeddedBroker
from handshake_devstack.processes import free_port
from handshake_shared.kafka import client_security, ensure_topics, make_broker
from handshake_shared.settings import ServiceSettings

PASSWORD = "scram-password-for-the-order-service-0123456789"


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


Issuer = tuple[x509.Name, ec.EllipticCurvePrivateKey]


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: Issuer | None, **kind: Any) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if kind.get("ca"):
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if kind.get("server"):
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, other_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    ca = _certificate("handshake test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    ca_path, _ = _write(directory, "ca", ca, ca_key)
    other = _certificate("someone else's CA", other_key, None, ca=True)
    other_path, _ = _write(directory, "other-ca", other, other_key)
    server = _write(directory, "server", _certificate("broker", server_key, issuer, server=True), server_key)
    client = _write(directory, "client", _certificate("order", client_key, issuer), client_key)
    return Pki(ca_path, other_path, *server, *client)


def settings_for(bootstrap: str, pki: Pki, protocol: str = "SSL", **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = dict(
        environment="test",
        kafka_bootstrap_servers=bootstrap,
        kafka_security_protocol=protocol,
        kafka_ssl_ca_file=str(pki.ca),
        kafka_ssl_cert_file=str(pki.client_cert),
        kafka_ssl_key_file=str(pki.client_key),
        # the embedded broker has no InitProducerId
        kafka_enable_idempotence=False,
    )
    if protocol.startswith("SASL_"):
        values.update(kafka_sasl_username="order", kafka_sasl_password=PASSWORD)
    return ServiceSettings(**(values | overrides))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    broker = EmbeddedBroker(
        port,
        log_dir=tmp_path_factory.mktemp("tls-broker"),
        partitions=2,
        # mutual TLS: a client without a certificate from our CA is turned away
        tls=BrokerTls(pki.server_cert, pki.server_key, client_ca_file=pki.ca),
        client_security=client_security(settings_for(f"127.0.0.1:{port}", pki)),
    )
    broker.start()  # creates the event topics through the admin client, over TLS
    yield broker
    broker.stop()


def ca_names(kafka_client: Any) -> list[str]:
    context = kafka_client._ssl_context
    return [dict(pair[0] for pair in cert["subject"])["commonName"] for cert in context.get_ca_certs()]


async def test_the_admin_client_creates_topics_over_mutual_tls(tls_broker: EmbeddedBroker, pki: Pki) -> None:
    settings = settings_for(tls_broker.bootstrap_servers, pki)
    topic = f"test.tls.admin.{uuid.uuid4().hex[:8]}"
    await ensure_topics(tls_broker.bootstrap_servers, [topic], 3, security=client_security(settings))

    admin = AIOKafkaAdminClient(bootstrap_servers=tls_broker.bootstrap_servers, **client_security(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 3


async def test_events_go_through_make_broker_over_mutual_tls(tls_broker: EmbeddedBroker, pki: Pki) -> None:
    settings = settings_for(tls_broker.bootstrap_servers, pki)
    topic = f"test.tls.events.{uuid.uuid4().hex[:8]}"
    await ensure_topics(tls_broker.bootstrap_servers, [topic], 1, security=client_security(settings))
    received: asyncio.Queue[tuple[bytes | None, bytes]] = asyncio.Queue()

    broker = make_broker(settings, "test-tls")
    subscriber = broker.subscriber(topic, group_id=f"test-tls-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest")

    @subscriber
    async def handle(body: bytes, message: KafkaMessage) -> None:
        await received.put((message.raw_message.key, body))

    async with broker:
        await broker.start()
        await broker.publish(b"order placed", topic=topic, key=b"order-1")
        assert await asyncio.wait_for(received.get(), 30) == (b"order-1", b"order placed")

        # the clients FastStream built talk TLS with the CA from the settings
        producer = broker.config.broker_config.producer._producer.producer
        clients = {
            "producer": producer.client,
            "consumer": subscriber.consumer._client,
            "admin": broker.config.broker_config.admin_client._client,
        }
        for role, kafka_client in clients.items():
            assert kafka_client._security_protocol == "SSL", role
            assert ca_names(kafka_client) == ["handshake test CA"], role


async def test_a_client_that_does_not_trust_the_broker_certificate_cannot_connect(
    tls_broker: EmbeddedBroker, pki: Pki
) -> None:
    settings = settings_for(tls_broker.bootstrap_servers, pki, kafka_ssl_ca_file=str(pki.other_ca))
    with pytest.raises(KafkaConnectionError):
        await make_broker(settings, "test-wrong-ca").connect()
    with pytest.raises(KafkaConnectionError):
        await ensure_topics(tls_broker.bootstrap_servers, ["test.never"], 1, security=client_security(settings))


async def test_the_broker_turns_away_a_client_without_a_certificate(tls_broker: EmbeddedBroker, pki: Pki) -> None:
    settings = settings_for(tls_broker.bootstrap_servers, pki, kafka_ssl_cert_file=None, kafka_ssl_key_file=None)
    with pytest.raises(KafkaConnectionError):
        await make_broker(settings, "test-no-cert").connect()
    with pytest.raises(KafkaConnectionError):
        await ensure_topics(tls_broker.bootstrap_servers, ["test.never"], 1, security=client_security(settings))


async def test_plaintext_clients_cannot_talk_to_the_tls_broker(tls_broker: EmbeddedBroker) -> None:
    # the old call, without security: what makes the other tests pass is the settings, not the broker
    with pytest.raises(KafkaConnectionError):
        await ensure_topics(tls_broker.bootstrap_servers, ["test.never"], 1)


@contextlib.asynccontextmanager
async def aiokafka_clients(broker: KafkaBroker, settings: ServiceSettings) -> AsyncIterator[dict[str, Any]]:
    """The aiokafka clients behind a FastStream broker, built before any connection: the consumer from the
    builder subscribers use, the producer and FastStream's admin from the keyword arguments its connect()
    passes (FastStream 0.7 keeps them on the broker), ours the way ensure_topics builds it."""
    connection = broker._connection_kwargs
    producer = AIOKafkaProducer(**connection)
    consumer = broker.config.broker_config.builder(group_id="g")
    faststream_admin = AIOKafkaAdminClient(**filter_by_dict(AdminClientConnectionParams, connection)[0])
    our_admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:9", **client_security(settings))
    try:
        yield {
            "producer": producer.client,
            "consumer": consumer._client,
            "faststream admin": faststream_admin._client,
            "ensure_topics admin": our_admin._client,
        }
    finally:
        await producer.stop()
        await consumer.stop()
        await faststream_admin.close()
        await our_admin.close()


async def test_sasl_ssl_settings_reach_every_client(pki: Pki) -> None:
    settings = settings_for("127.0.0.1:9", pki, "SASL_SSL")
    async with aiokafka_clients(make_broker(settings, "test-sasl"), settings) as clients:
        for role, kafka_client in clients.items():
            assert kafka_client._security_protocol == "SASL_SSL", role
            assert kafka_client._sasl_mechanism == "SCRAM-SHA-512", role
            assert kafka_client._sasl_plain_username == "order", role
            assert kafka_client._sasl_plain_password == PASSWORD, role
            assert ca_names(kafka_client) == ["handshake test CA"], role


async def test_sasl_plaintext_carries_credentials_without_tls(pki: Pki) -> None:
    settings = settings_for("127.0.0.1:9", pki, "SASL_PLAINTEXT", kafka_sasl_mechanism="scram-sha-256")
    async with aiokafka_clients(make_broker(settings, "test-sasl"), settings) as clients:
        for role, kafka_client in clients.items():
            assert kafka_client._security_protocol == "SASL_PLAINTEXT", role
            assert kafka_client._sasl_mechanism == "SCRAM-SHA-256", role
            assert kafka_client._sasl_plain_password == PASSWORD, role
            assert kafka_client._ssl_context is None, role


async def test_sasl_ssl_clients_complete_tls_then_ask_for_scram(
    tls_broker: EmbeddedBroker, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # Tansu without --authentication answers a SASL handshake with "mechanism not supported": seeing that
    # answer proves the TLS handshake (CA, client certificate) succeeded and SCRAM was asked for after it
    settings = settings_for(tls_broker.bootstrap_servers, pki, "SASL_SSL")
    caplog.set_level(logging.ERROR, logger="aiokafka")

    def asked_for_sasl() -> bool:
        messages = [r.getMessage() for r in caplog.records]
        caplog.clear()
        return any("UnsupportedSaslMechanismError" in m for m in messages)

    with pytest.raises(KafkaConnectionError):
        await make_broker(settings, "test-sasl").connect()
    assert asked_for_sasl()
    with pytest.raises(KafkaConnectionError):
        await ensure_topics(tls_broker.bootstrap_servers, ["test.never"], 1, security=client_security(settings))
    assert asked_for_sasl()


def test_plaintext_settings_add_nothing() -> None:
    settings = ServiceSettings(environment="test")
    assert client_security(settings) == {}
    assert make_broker(settings, "test")._connection_kwargs.get("ssl_context") is None


@pytest.mark.parametrize(
    "overrides, problem",
    [
        ({"kafka_sasl_mechanism": "GSSAPI"}, "HANDSHAKE_KAFKA_SASL_MECHANISM"),
        ({"kafka_sasl_username": None}, "HANDSHAKE_KAFKA_SASL_USERNAME"),
    ],
)
def test_sasl_settings_that_cannot_work_stop_the_wiring(pki: Pki, overrides: dict[str, Any], problem: str) -> None:
    # an unknown mechanism is refused as the settings are read, a missing username when the client is wired
    with pytest.raises(ValueError, match=problem):
        make_broker(settings_for("127.0.0.1:9", pki, "SASL_SSL", **overrides), "test")
