"""The released event shapes are kept: a change that is not backward compatible fails here unless it is
published as a new event type (a new type version) or on a new topic."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from handshake_shared.events import order as o
from handshake_shared.events import schemas
from handshake_shared.events.compat import breaking_changes
from handshake_shared.events.registry import EVENT_MODELS

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

Schema = dict[str, Any]


def test_the_current_models_keep_every_released_shape():
    assert schemas.compatibility_problems() == {}


def test_every_released_type_is_still_produced():
    assert set(schemas.released_schemas()) <= set(EVENT_MODELS)


def refund() -> Schema:
    return o.OrderRefundRequested.model_json_schema()


def with_(change: Callable[[Schema], None]) -> Schema:
    schema = copy.deepcopy(refund())
    change(schema)
    return schema


def props(s: Schema) -> dict[str, Any]:
    return s["properties"]


def transition(s: Schema) -> Schema:
    return s["$defs"]["Transition"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: props(s).update(note={"type": "string"}), id="new optional field"),
        pytest.param(lambda s: props(s)["amount"].update(description="other words", title="Sum"), id="wording"),
        pytest.param(lambda s: props(s)["restock"].update(default=True), id="default"),
        pytest.param(lambda s: props(transition(s))["to_state"]["enum"].append("archived"), id="new enum member"),
        pytest.param(lambda s: None, id="unchanged"),
    ],
)
def test_compatible_changes_pass(change: Callable[[Schema], None]) -> None:
    assert breaking_changes(refund(), with_(change)) == []


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (lambda s: props(s).pop("currency"), "data.currency: removed"),
        (lambda s: props(s).update(amount={"type": "string"}), "data.amount: type integer became string"),
        (
            lambda s: props(s).update(amount={"anyOf": [{"type": "integer"}, {"type": "null"}]}),
            "data.amount: type integer became integer|null",
        ),
        (
            lambda s: (props(s).update(note={"type": "string"}), s["required"].append("note")),
            "data.note: new required field",
        ),
        (lambda s: s["required"].append("restock"), "data.restock: newly required"),
        (lambda s: s["required"].remove("reason"), "data.reason: no longer required"),
        (lambda s: props(s)["amount"].update(exclusiveMinimum=100), "data.amount: exclusiveMinimum 0 became 100"),
        (lambda s: props(s)["reason"].update(maxLength=10), "data.reason: maxLength None became 10"),
        (
            lambda s: props(transition(s))["to_state"]["enum"].remove("closed"),
            "data.transition.to_state: enum lost ['closed']",
        ),
        (lambda s: props(transition(s)).pop("reason"), "data.transition.reason: removed"),
        (lambda s: s.update(additionalProperties=False), "data: no longer accepts additional properties"),
    ],
)
def test_breaking_changes_are_found(change: Callable[[Schema], None], found: str) -> None:
    assert found in breaking_changes(refund(), with_(change))


def test_array_items_are_compared():
    placed = o.OrderPlaced.model_json_schema()
    changed = copy.deepcopy(placed)
    changed["$defs"]["Line"]["properties"]["quantity"] = {"type": "string"}
    assert breaking_changes(placed, changed) == ["data.lines[].quantity: type integer became string"]


def test_restricting_a_free_string_to_an_enum_is_breaking():
    changed = with_(lambda s: props(s)["currency"].update(enum=["EUR"]))
    assert breaking_changes(refund(), changed) == ["data.currency: restricted to ['EUR']"]


def test_the_generator_records_compatible_changes_and_refuses_a_breaking_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(schemas, "RELEASED_DIR", tmp_path)
    released = refund()
    (tmp_path / "order.refund_requested.schema.json").write_text(json.dumps(released))
    current = {
        "order.refund_requested": with_(lambda s: props(s).pop("currency")),
        "order.brand_new": {"type": "object"},
    }
    monkeypatch.setattr(schemas, "event_schemas", lambda: current)

    assert schemas.write_released() == ["order.refund_requested: data.currency: removed"]
    assert json.loads((tmp_path / "order.refund_requested.schema.json").read_text()) == released  # kept
    assert json.loads((tmp_path / "order.brand_new.schema.json").read_text()) == {"type": "object"}  # recorded

    current["order.refund_requested"] = with_(lambda s: props(s).update(note={"type": "string"}))
    assert schemas.write_released() == []
    assert "note" in json.loads((tmp_path / "order.refund_requested.schema.json").read_text())["properties"]


def test_a_type_no_longer_produced_is_reported(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(schemas, "RELEASED_DIR", tmp_path)
    (tmp_path / "order.gone.schema.json").write_text(json.dumps({"type": "object"}))
    assert schemas.compatibility_problems() == {"order.gone": ["the event type is no longer produced"]}
