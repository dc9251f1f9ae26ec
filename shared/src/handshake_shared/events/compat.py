"""Is an event's data schema backward compatible with the one released before?

Compatible means both of these hold, so neither side of a released type has to change in step:
* a subscriber written against the released schema reads every event the producer now sends (nothing it
  relies on disappears, changes type, stops being guaranteed or gets values it was told cannot occur
  except new enum members);
* every event already on the topic (a replay from the beginning, 30 days back) is still valid under the
  current schema (nothing newly required, no tighter constraint).

So: a new optional field, a new event type, a new enum member and any title, description or default are
compatible. A removed field, a changed type (adding or removing `null` included), a field that becomes
required or stops being required, a changed constraint (length, range, pattern, format, const) and an
enum losing a member are not: such a change is a new event type (`order.placed.v2`) or a new topic,
published next to the old one during a migration window.
"""

from __future__ import annotations

from typing import Any

_CONSTRAINTS = (
    "const",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
)
_JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")


def breaking_changes(released: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Every backward-incompatible difference from `released` to `current`, as `path: what`; empty when
    compatible. Both are JSON Schemas as pydantic writes them (local `$ref`s into `$defs`)."""
    problems: list[str] = []
    _compare(released, released, current, current, "data", problems, set())
    return problems


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    seen: set[str] = set()
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"unsupported or circular $ref {ref!r}")
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        # keywords beside a $ref (pydantic puts description/default there) refine the referenced schema
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _alternatives(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(node, root)
    for key in ("anyOf", "oneOf"):
        if key in node:
            return [alt for sub in node[key] for alt in _alternatives(sub, root)]
    return [node]


def _types_of(node: dict[str, Any]) -> tuple[str, ...]:
    declared = node.get("type")
    if declared is None:
        if "enum" in node or "const" in node:
            values = node.get("enum", [node.get("const")])
            return tuple(sorted({_json_type(v) for v in values}))
        return _JSON_TYPES  # no type: anything
    return (declared,) if isinstance(declared, str) else tuple(sorted(declared))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _by_type(alternatives: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for alt in alternatives:
        for json_type in _types_of(alt):
            out.setdefault(json_type, alt)
    return out


def _compare(
    r: dict[str, Any],
    r_root: dict[str, Any],
    c: dict[str, Any],
    c_root: dict[str, Any],
    path: str,
    problems: list[str],
    seen: set[tuple[int, int]],
) -> None:
    if (id(r), id(c)) in seen:
        return
    seen.add((id(r), id(c)))
    r_types = _by_type(_alternatives(r, r_root))
    c_types = _by_type(_alternatives(c, c_root))
    if set(r_types) != set(c_types):
        problems.append(f"{path}: type {'|'.join(sorted(r_types))} became {'|'.join(sorted(c_types))}")
        return
    for json_type, r_alt in r_types.items():
        c_alt = c_types[json_type]
        for keyword in _CONSTRAINTS:
            if r_alt.get(keyword) != c_alt.get(keyword):
                problems.append(f"{path}: {keyword} {r_alt.get(keyword)!r} became {c_alt.get(keyword)!r}")
        if "enum" in r_alt or "enum" in c_alt:
            if "enum" not in c_alt:
                pass  # any value of the type is allowed now: wider, like a new enum member
            elif "enum" not in r_alt:
                problems.append(f"{path}: restricted to {c_alt['enum']!r}")
            elif lost := [v for v in r_alt["enum"] if v not in c_alt["enum"]]:
                problems.append(f"{path}: enum lost {lost!r}")
        if json_type == "object":
            _compare_object(r_alt, r_root, c_alt, c_root, path, problems, seen)
        elif json_type == "array" and ("items" in r_alt or "items" in c_alt):
            _compare(r_alt.get("items", {}), r_root, c_alt.get("items", {}), c_root, f"{path}[]", problems, seen)


def _compare_object(
    r: dict[str, Any],
    r_root: dict[str, Any],
    c: dict[str, Any],
    c_root: dict[str, Any],
    path: str,
    problems: list[str],
    seen: set[tuple[int, int]],
) -> None:
    r_props, c_props = r.get("properties", {}), c.get("properties", {})
    r_required, c_required = set(r.get("required", ())), set(c.get("required", ()))
    for name in sorted(r_props):
        if name not in c_props:
            problems.append(f"{path}.{name}: removed")
            continue
        _compare(r_props[name], r_root, c_props[name], c_root, f"{path}.{name}", problems, seen)
    for name in sorted(c_required - r_required):
        problems.append(f"{path}.{name}: {'newly required' if name in r_props else 'new required field'}")
    for name in sorted(r_required - c_required):
        problems.append(f"{path}.{name}: no longer required")
    if r.get("additionalProperties", True) is not False and c.get("additionalProperties", True) is False:
        problems.append(f"{path}: no longer accepts additional properties")
