"""Deterministic default answers: plain text, ``json_object`` answers and JSON from a JSON Schema.

Everything here is a pure function of its inputs, so the same request always gets the same answer.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_PREFIX = "Offline model answer to: "
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
TEXT_LIMIT = 200
_MAX_DEPTH = 12
_FORMAT_SAMPLES = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "offline@example.com",
    "uri": "https://example.com/offline",
    "url": "https://example.com/offline",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
}


def count_tokens(text: str) -> int:
    """A deterministic token estimate: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


def default_text(user: str) -> str:
    """The plain-text answer given when no rule matches: derived only from the last user message."""
    snippet = " ".join(user.split())[:TEXT_LIMIT]
    return f"{DEFAULT_PREFIX}{snippet}" if snippet else "Offline model answer."


def json_object_answer(user: str) -> dict[str, str]:
    """The answer to a ``{"type": "json_object"}`` request when no rule matches."""
    return {"answer": default_text(user)}


def invalid_json_text(user: str) -> str:
    """Text that looks like JSON but does not parse (an unterminated object and string)."""
    return '{"answer": "' + default_text(user).replace('"', "'")


def generate_from_schema(schema: dict[str, Any], seed: str = "") -> Any:
    """Return a value valid against the JSON Schema ``schema``, derived from ``seed`` text.

    Objects get every listed and required property, enums their first member, numbers their
    minimum (or 1), arrays one item (or ``minItems``), booleans ``true``. ``$ref`` into
    ``$defs``/``definitions``, ``anyOf``/``oneOf`` (first non-null branch), ``allOf`` and
    nullable type lists are handled.
    """
    return _SchemaWalker(schema, " ".join(seed.split())[:60]).value(schema, "value", 0)


class _SchemaWalker:
    """Walks a schema, resolving local ``$ref`` pointers against the root document."""

    def __init__(self, root: dict[str, Any], seed: str) -> None:
        self._root = root
        self._seed = seed

    def value(self, schema: Any, name: str, depth: int) -> Any:
        """A value for ``schema`` of a property called ``name`` at nesting ``depth``."""
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            return self.value({**rest, **_first_non_null(branches)}, name, depth + 1)
        kind = _pick_type(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self._string(schema, name)

    def _resolve(self, schema: Any, depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH * 4:
            raise ValueError("schema nests too deeply (recursive $ref without a way out?)")
        if not isinstance(schema, dict):
            return {}
        if "$ref" in schema:
            target = self._pointer(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return self._resolve({**target, **rest}, depth + 1)
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self._resolve(part, depth + 1))
            return merged
        return schema

    def _pointer(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref pointers are supported, got {ref!r}")
        node: Any = self._root
        for token in [t for t in ref[1:].split("/") if t]:
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return node if isinstance(node, dict) else {}

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        names = list(properties) + [n for n in schema.get("required", []) if n not in properties]
        if depth >= _MAX_DEPTH:
            names = [n for n in names if n in schema.get("required", [])]
        return {n: self.value(properties.get(n, {"type": "string"}), n, depth + 1) for n in names}

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        count = max(int(schema.get("minItems", 1)), 0 if depth >= _MAX_DEPTH else 1)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        prefix = schema.get("prefixItems") or []
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        out = []
        for index in range(count):
            item_schema = prefix[index] if index < len(prefix) else items
            item_name = f"{name} {index + 1}" if schema.get("uniqueItems") and count > 1 else name
            out.append(self.value(item_schema, item_name, depth + 1))
        return out

    def _string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        text = _FORMAT_SAMPLES.get(fmt) if isinstance(fmt, str) else None
        if text is None:
            text = f"{name} for: {self._seed}" if self._seed else f"offline {name}"
        min_len = int(schema.get("minLength", 0))
        if len(text) < min_len:
            text = text + "x" * (min_len - len(text))
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text


def _first_non_null(branches: list[Any]) -> dict[str, Any]:
    for branch in branches:
        if isinstance(branch, dict) and branch.get("type") != "null":
            return branch
    return branches[0] if branches and isinstance(branches[0], dict) else {}


def _pick_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if non_null else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = _bound(schema, "exclusiveMinimum"), _bound(schema, "exclusiveMaximum")
    value: float = 1
    if low is not None:
        value = low
    elif ex_low is not None:
        value = ex_low + (1 if integer else 0.5)
    if high is not None and value > high:
        value = high
    if ex_high is not None and value >= ex_high:
        floor = low if low is not None else ex_low
        value = ex_high - 1 if integer or floor is None else (floor + ex_high) / 2
    step = schema.get("multipleOf")
    if step:
        value = math.ceil(value / step) * step
    return math.ceil(value) if integer else float(value)


def _bound(schema: dict[str, Any], key: str) -> float | None:
    """A numeric ``exclusiveMinimum``/``exclusiveMaximum`` (draft-4 booleans are ignored)."""
    value = schema.get(key)
    return None if isinstance(value, bool) or not isinstance(value, int | float) else value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **extra}
    if "properties" in base or "properties" in extra:
        merged["properties"] = {**base.get("properties", {}), **extra.get("properties", {})}
    if "required" in base or "required" in extra:
        merged["required"] = list(dict.fromkeys([*base.get("required", []), *extra.get("required", [])]))
    return merged
