"""Backward compatibility of event contracts: what a new schema may not do to an event type.

The log is immutable, so every event ever stored must stay readable by the current code. A schema
change under the same event type version is therefore refused when it removes a field, makes a
field required that was optional, or narrows what a field accepts (a JSON type, an enum value or
a constant it allowed before). Adding optional fields and widening types are compatible. A
breaking change needs a new version of the event type (``….v2``), with the old one kept.

:func:`breaking` compares two JSON Schemas (as ``agentos contracts`` writes them, ``$defs``
inline); ``agentos contracts`` refuses to write a breaking one.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def breaking(old: Schema, new: Schema) -> list[str]:
    """Every incompatibility of ``new`` with ``old``, as ``path: what`` lines (none: compatible)."""
    return _node(old, new, old.get("$defs", {}), new.get("$defs", {}), "", set())


def _resolve(node: Schema, defs: Schema) -> Schema:
    ref = node.get("$ref", "")
    return defs.get(ref.rsplit("/", 1)[-1], node) if ref.startswith("#/$defs/") else node


def _branches(node: Schema, defs: Schema) -> list[Schema]:
    node = _resolve(node, defs)
    alternatives = node.get("anyOf") or node.get("oneOf")
    return [b for alt in alternatives for b in _branches(alt, defs)] if alternatives else [node]


def _accepts(node: Schema, defs: Schema) -> tuple[set[str], set[Any] | None]:
    """(JSON types, allowed values or None for any value of those types) of a schema node."""
    types: set[str] = set()
    values: set[Any] | None = set()
    for branch in _branches(node, defs):
        if "const" in branch or "enum" in branch:
            found = [branch["const"]] if "const" in branch else branch["enum"]
            types |= {_json_type(v) for v in found}
            if values is not None:
                values |= {repr(v) for v in found}
            continue
        kind = branch.get("type")
        types |= set(kind) if isinstance(kind, list) else {kind} if kind else {"any"}
        values = None
    return types, values


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(type(value), "object")


def _narrowed(old: Schema, new: Schema, old_defs: Schema, new_defs: Schema) -> str | None:
    old_types, old_values = _accepts(old, old_defs)
    new_types, new_values = _accepts(new, new_defs)
    if "any" in new_types:
        return None
    lost = old_types - new_types - ({"integer"} if "number" in new_types else set())  # number takes integers
    if lost:
        return f"no longer accepts {', '.join(sorted(lost))}"
    if new_values is not None:
        if old_values is None:
            return "now accepts only the values " + ", ".join(sorted(new_values))
        if gone := old_values - new_values:
            return "no longer accepts the values " + ", ".join(sorted(gone))
    return None


def _node(old: Schema, new: Schema, old_defs: Schema, new_defs: Schema, path: str, seen: set[str]) -> list[str]:
    problems: list[str] = []
    if (why := _narrowed(old, new, old_defs, new_defs)) is not None:
        problems.append(f"{path or '(event)'}: {why}")
    old_obj, new_obj = _object(old, old_defs), _object(new, new_defs)
    if old_obj is not None and new_obj is not None:
        key = f"{path}|{id(old_obj)}"
        if key not in seen:
            seen.add(key)
            problems += _object_changes(old_obj, new_obj, old_defs, new_defs, path, seen)
    old_items, new_items = _items(old, old_defs), _items(new, new_defs)
    if old_items is not None and new_items is not None:
        problems += _node(old_items, new_items, old_defs, new_defs, f"{path}[]", seen)
    return problems


def _object_changes(
    old: Schema, new: Schema, old_defs: Schema, new_defs: Schema, path: str, seen: set[str]
) -> list[str]:
    problems: list[str] = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in sorted(old_props):
        where = f"{path}.{name}" if path else name
        if name not in new_props:
            problems.append(f"{where}: removed")
            continue
        problems += _node(old_props[name], new_props[name], old_defs, new_defs, where, seen)
    for name in sorted(set(new.get("required", ())) - set(old.get("required", ()))):
        problems.append(f"{f'{path}.{name}' if path else name}: now required (events stored without it)")
    return problems


def _object(node: Schema, defs: Schema) -> Schema | None:
    objects = [b for b in _branches(node, defs) if b.get("type") == "object" or "properties" in b]
    return objects[0] if len(objects) == 1 else None


def _items(node: Schema, defs: Schema) -> Schema | None:
    arrays = [b for b in _branches(node, defs) if b.get("type") == "array" and isinstance(b.get("items"), dict)]
    return arrays[0]["items"] if len(arrays) == 1 else None
