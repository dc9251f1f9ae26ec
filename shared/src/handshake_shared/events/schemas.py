"""Generates the committed contract files from the payload models:
schemas/events/<type>.schema.json (JSON Schema of each event's data), schemas/asyncapi.json and
schemas/CATALOGUE.md (the event catalogue for subscribers). `python -m handshake_shared.events.schemas --write`
regenerates them; a test fails when they drift.

schemas/released/<type>.schema.json is what subscribers were promised: `--write` records a new type there,
moves a type on to its new shape when the change is backward compatible (events/compat.py), and refuses a
breaking change (exit status 1, the released file untouched): publish it as a new type version instead."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

from handshake_shared.envelope import CONTENT_TYPE, CloudEvent
from handshake_shared.events.compat import breaking_changes
from handshake_shared.events.registry import EVENT_MODELS, TOPIC_OF
from handshake_shared.events.topics import SAGA_TOPICS

SCHEMA_DIR = Path(__file__).resolve().parents[4] / "schemas"
RELEASED_DIR = SCHEMA_DIR / "released"

PRODUCERS = {
    "order.events.v1": "order",
    "inventory.events.v1": "inventory",
    "payment.events.v1": "payment",
    "provider.events.v1": "webhook-ingest",
}
PUBLIC_TOPICS = ("order.events.v1",)

KAFKA_HEADERS = {
    "type": "object",
    "properties": {
        "content-type": {"const": CONTENT_TYPE, "description": "structured mode: the attributes are in the body"},
        "traceparent": {"type": "string", "description": "W3C trace context, the same as the body's traceparent"},
        "handshake-resend-of": {
            "type": "string",
            "description": "on an announcement staff sent again: the id of the event it repeats (same type and "
            "data, a new id); a subscriber that already applied that state for the order ignores it",
        },
    },
    "required": ["content-type"],
}


def event_schemas() -> dict[str, dict[str, Any]]:
    return {t: EVENT_MODELS[t].model_json_schema() for t in sorted(EVENT_MODELS)}


def envelope_schema() -> dict[str, Any]:
    return CloudEvent.model_json_schema(mode="serialization")


def asyncapi() -> dict[str, Any]:
    messages: dict[str, Any] = {}
    for event_type in sorted(EVENT_MODELS):
        messages[event_type.replace(".", "_")] = {
            "name": event_type,
            "contentType": CONTENT_TYPE,
            "headers": KAFKA_HEADERS,
            "bindings": {"kafka": {"key": {"type": "string", "description": "the order id"}}},
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {
                        "properties": {
                            "type": {"const": event_type},
                            "data": {"$ref": f"./events/{event_type}.schema.json"},
                        }
                    },
                ]
            },
        }
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
            "description": "CloudEvents 1.0 in JSON structured mode (the Kafka protocol binding's structured "
            "content mode: content-type header, every attribute in the body), one per Kafka message, keyed "
            "by order id.",
        },
        "channels": channels,
        "components": {"schemas": {"CloudEvent": envelope_schema()}, "messages": messages},
    }


def _doc(model: type) -> str:
    return " ".join(inspect.cleandoc(model.__doc__).split()) if model.__doc__ else ""


def _field_list(schema: dict[str, Any]) -> str:
    required = set(schema.get("required", ()))
    return ", ".join(f"`{name}`" + ("" if name in required else "?") for name in schema.get("properties", {}))


def catalogue() -> str:
    schemas = event_schemas()
    lines = [
        "# Event catalogue",
        "",
        "Generated from the payload models (`python -m handshake_shared.events.schemas --write`); do not edit.",
        "Every event is a CloudEvent 1.0 in structured mode; this lists its `type` and its `data`. A field",
        "marked `?` may be absent (or null). The JSON Schema of each `data` is `events/<type>.schema.json`;",
        "the envelope is `CloudEvent` in `asyncapi.json`.",
        "",
    ]
    for topic in SAGA_TOPICS:
        audience = "public: other teams subscribe" if topic in PUBLIC_TOPICS else "internal to Handshake"
        lines += [
            f"## `{topic}` ({audience}; produced by {PRODUCERS[topic]})",
            "",
            "| type | data fields | meaning |",
            "| --- | --- | --- |",
        ]
        for event_type in sorted(t for t in EVENT_MODELS if TOPIC_OF[t] == topic):
            model = EVENT_MODELS[event_type]
            link = f"[`{event_type}`](events/{event_type}.schema.json)"
            lines.append(f"| {link} | {_field_list(schemas[event_type])} | {_doc(model)} |")
        lines.append("")
    return "\n".join(lines)


def rendered() -> dict[Path, str]:
    files = {
        SCHEMA_DIR / "asyncapi.json": json.dumps(asyncapi(), indent=2, sort_keys=True) + "\n",
        SCHEMA_DIR / "CATALOGUE.md": catalogue(),
    }
    for event_type, schema in event_schemas().items():
        files[SCHEMA_DIR / "events" / f"{event_type}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def released_schemas() -> dict[str, dict[str, Any]]:
    return {p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in RELEASED_DIR.glob("*.schema.json")}


def compatibility_problems() -> dict[str, list[str]]:
    """Per released type, what the current models break (a type no longer produced breaks everything)."""
    current = event_schemas()
    problems: dict[str, list[str]] = {}
    for event_type, released in sorted(released_schemas().items()):
        if event_type not in current:
            problems[event_type] = ["the event type is no longer produced"]
        elif found := breaking_changes(released, current[event_type]):
            problems[event_type] = found
    return problems


def write_released() -> list[str]:
    """Record new types and compatible changes; leave a broken type's released file as it is."""
    broken = compatibility_problems()
    for event_type, schema in event_schemas().items():
        if event_type not in broken:
            path = RELEASED_DIR / f"{event_type}.schema.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return [f"{t}: {p}" for t, found in broken.items() for p in found]


def main() -> int:
    files = rendered()
    if "--write" in sys.argv:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        print(f"wrote {len(files)} files under {SCHEMA_DIR}")
        breaking = write_released()
    else:
        stale = [str(p) for p, text in files.items() if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"out of date: {p}")
        breaking = [f"{t}: {p}" for t, found in compatibility_problems().items() for p in found]
        if stale:
            return 1
    for line in breaking:
        print(f"not backward compatible with the released schema: {line}")
    if breaking:
        print("publish the new shape as a new event type (e.g. order.placed.v2) or on a new topic; see README")
    return 1 if breaking else 0


if __name__ == "__main__":
    raise SystemExit(main())
