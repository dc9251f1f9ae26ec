"""Generates the committed contract files from the payload models:
schemas/events/<type>.schema.json (JSON Schema of each event's data) and schemas/asyncapi.json.
`python -m handshake_shared.events.schemas --write` regenerates; a test fails when they drift."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from handshake_shared.envelope import CloudEvent
from handshake_shared.events.registry import EVENT_MODELS, TOPIC_OF
from handshake_shared.events.topics import SAGA_TOPICS

SCHEMA_DIR = Path(__file__).resolve().parents[4] / "schemas"

PRODUCERS = {
    "order.events.v1": "order",
    "inventory.events.v1": "inventory",
    "payment.events.v1": "payment",
    "provider.events.v1": "webhook-ingest",
}


def event_schemas() -> dict[str, dict[str, Any]]:
    return {t: EVENT_MODELS[t].model_json_schema() for t in sorted(EVENT_MODELS)}


def asyncapi() -> dict[str, Any]:
    envelope = CloudEvent.model_json_schema()
    messages: dict[str, Any] = {}
    for event_type in sorted(EVENT_MODELS):
        messages[event_type.replace(".", "_")] = {
            "name": event_type,
            "contentType": "application/cloudevents+json",
            "bindings": {"kafka": {"key": {"type": "string", "description": "the order id"}}},
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {"properties": {"type": {"const": event_type},
                                    "data": {"$ref": f"./events/{event_type}.schema.json"}}},
                ]
            },
        }  # fmt: skip
    channels = {
        topic: {
            "address": topic,
            "description": f"produced by the {PRODUCERS[topic]} service",
            "messages": {
                t.replace(".", "_"): {"$ref": f"#/components/messages/{t.replace('.', '_')}"}
                for t in sorted(EVENT_MODELS)
                if TOPIC_OF[t] == topic
            },
        }
        for topic in SAGA_TOPICS
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Handshake checkout events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 in JSON structured mode, one per Kafka message, keyed by order id.",
        },
        "channels": channels,
        "components": {"schemas": {"CloudEvent": envelope}, "messages": messages},
    }


def rendered() -> dict[Path, str]:
    files = {SCHEMA_DIR / "asyncapi.json": json.dumps(asyncapi(), indent=2, sort_keys=True) + "\n"}
    for event_type, schema in event_schemas().items():
        files[SCHEMA_DIR / "events" / f"{event_type}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def main() -> int:
    files = rendered()
    if "--write" in sys.argv:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        print(f"wrote {len(files)} files under {SCHEMA_DIR}")
        return 0
    stale = [str(p) for p, text in files.items() if not p.exists() or p.read_text() != text]
    for p in stale:
        print(f"out of date: {p}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
