"""An example subscriber of order.events.v1, written the way another team would: the plain confluent-kafka
client, the committed JSON Schemas, and nothing from Handshake's own code.

It reads the topic in its own consumer group, validates each message (structured-mode CloudEvent, then the
`data` of its type), drops redeliveries by event `id`, and rebuilds every order's state from the
`transition` the order events carry.

    python order_subscriber.py --bootstrap-servers kafka:9093 --group example-team.orders --to-end

prints one JSON document: per order its state and transitions, and the messages that failed validation.
Without --to-end it keeps consuming and prints each order's new state as it changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from jsonschema import Draft202012Validator

TOPIC = "order.events.v1"
CONTENT_TYPE = "application/cloudevents+json"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


class Contract:
    """The committed schemas: the CloudEvent envelope (from asyncapi.json) and each type's `data`."""

    def __init__(self, schemas: Path) -> None:
        envelope = json.loads((schemas / "asyncapi.json").read_text())["components"]["schemas"]["CloudEvent"]
        # attributes added later (new extensions) must not break us: check what is there, allow more
        envelope = {k: v for k, v in envelope.items() if k != "additionalProperties"}
        self.envelope = Draft202012Validator(envelope)
        self.data = {
            p.name.removesuffix(".schema.json"): Draft202012Validator(json.loads(p.read_text()))
            for p in (schemas / "events").glob("*.schema.json")
        }

    def problems(self, headers: dict[str, bytes], value: bytes) -> list[str]:
        found: list[str] = []
        if headers.get("content-type") != CONTENT_TYPE.encode():
            found.append(f"content-type header is {headers.get('content-type')!r}")
        if any(name.lower().startswith("ce_") for name in headers):
            found.append("ce_ headers on a structured-mode message")
        try:
            event = json.loads(value)
        except ValueError as exc:
            return [*found, f"not JSON: {exc}"]
        found += [f"envelope: {e.message}" for e in self.envelope.iter_errors(event)]
        validator = self.data.get(event.get("type", ""))
        if validator is None:
            return found  # a type we do not know yet: new types are additive, ignore it
        found += [f"data: {e.message}" for e in validator.iter_errors(event.get("data"))]
        return found


@dataclass
class Order:
    state: str | None = None
    transitions: list[tuple[str | None, str, str]] = field(default_factory=list)
    # an order's events arrive in order (one partition per order); a gap means we missed one
    gaps: list[str] = field(default_factory=list)


@dataclass
class Subscriber:
    contract: Contract
    orders: dict[str, Order] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    invalid: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0

    def handle(self, key: bytes | None, headers: dict[str, bytes], value: bytes) -> str | None:
        """Apply one message; the id of the order whose state changed, else None."""
        problems = self.contract.problems(headers, value)
        if problems:
            self.invalid.append({"key": (key or b"").decode(errors="replace"), "problems": problems})
            return None
        event = json.loads(value)
        if event["id"] in self.seen:  # at-least-once delivery: the same event may come twice
            self.duplicates += 1
            return None
        self.seen.add(event["id"])
        self.events += 1
        transition = (event.get("data") or {}).get("transition")
        if not transition:
            return None
        order = self.orders.setdefault(event["subject"], Order())
        if transition["from_state"] != order.state:
            order.gaps.append(f"{event['type']} from {transition['from_state']} while we knew {order.state}")
        order.state = transition["to_state"]
        order.transitions.append((transition["from_state"], transition["to_state"], transition["reason"]))
        return str(event["subject"])

    def report(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "orders": {
                oid: {"state": o.state, "transitions": o.transitions, "gaps": o.gaps} for oid, o in self.orders.items()
            },
        }


def consume(config: dict[str, Any], subscriber: Subscriber, *, to_end: bool, poll_seconds: float = 1.0) -> None:
    consumer = Consumer({"enable.auto.commit": False, "auto.offset.reset": "earliest", **config})
    # with --to-end: the end of every partition when we were assigned it; done when all are reached
    ends: dict[int, int] = {}
    assigned = False

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        nonlocal assigned
        for tp in partitions:
            _, high = c.get_watermark_offsets(tp, cached=False)
            ends[tp.partition] = high
        assigned = True

    consumer.subscribe([TOPIC], on_assign=on_assign)
    positions: dict[int, int] = {}
    try:
        while True:
            if to_end and assigned and all(positions.get(p, -1) + 1 >= end for p, end in ends.items()):
                return
            msg = consumer.poll(poll_seconds)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            headers = {k: v or b"" for k, v in (msg.headers() or [])}
            changed = subscriber.handle(msg.key(), headers, msg.value() or b"")
            positions[msg.partition()] = msg.offset()
            # commit after handling: a crash before this line brings the message again (dedupe by id)
            consumer.commit(message=msg, asynchronous=False)
            if changed and not to_end:
                print(json.dumps({"order_id": changed, "state": subscriber.orders[changed].state}), flush=True)
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--group", required=True, help="your team's consumer group (its ACL prefix)")
    parser.add_argument("--schemas", type=Path, default=SCHEMAS, help="the committed schemas/ directory")
    parser.add_argument("--to-end", action="store_true", help="stop at the end of the topic and print a report")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="more librdkafka settings: security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512, "
        "sasl.username=..., sasl.password=..., ssl.ca.location=...",
    )
    args = parser.parse_args(argv)
    config = {"bootstrap.servers": args.bootstrap_servers, "group.id": args.group}
    config.update(item.split("=", 1) for item in args.config)
    subscriber = Subscriber(Contract(args.schemas))
    consume(config, subscriber, to_end=args.to_end)
    if args.to_end:
        json.dump(subscriber.report(), sys.stdout)
        print()
    return 1 if subscriber.invalid else 0


if __name__ == "__main__":
    raise SystemExit(main())
