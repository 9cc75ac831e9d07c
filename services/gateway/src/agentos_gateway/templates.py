"""The expression language of mappings: dotted paths, templates and conditions.

- **Path**: ``data.object.payment.amount_money.amount``; list items by index (``detail.tags.0``
  or ``detail.tags[0]``).
- **Template**: a string with ``{path}`` placeholders, each optionally piped through filters:
  ``{detail.priority|lower|default:normal}``. A string that is exactly one placeholder keeps the
  value's JSON type (a number stays a number, a list a list); otherwise the parts are joined as
  text. ``{{`` and ``}}`` are literal braces. Strings without placeholders are literals; so are
  numbers, booleans and null. Mappings and lists are rendered item by item.
- **Filters**: ``lower``, ``upper``, ``strip``, ``str``, ``int``, ``float``, ``json``,
  ``join:<sep>``, ``after:<sep>`` (the text after the last ``sep``), and ``default:<value>``
  (used when the path is missing or null; the value is read as JSON if it parses, else as text;
  a bare ``default`` gives null). Without a default a missing path is an error naming the path.
  Filters other than ``json`` pass null through.
- **Condition**: ``<path> == <value>``, ``<path> != <value>``, ``<path> in [a, b]``,
  ``<path> not in [a, b]``, ``<path> exists``, ``<path> missing``. Values compare as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")
_CONDITION = re.compile(
    r"^\s*(?P<path>[A-Za-z0-9_.\[\]$-]+)\s+(?P<op>==|!=|not in|in|exists|missing)\s*(?P<value>.*?)\s*$"
)
_MISSING = object()


class TemplateError(ValueError):
    """A path is missing from the payload, or a value cannot be converted."""


def resolve(doc: Any, path: str) -> Any:
    """The value at a dotted ``path`` of ``doc``; :data:`_MISSING` when any step is absent."""
    value = doc
    for part in path.replace("[", ".").replace("]", "").removeprefix("$.").split("."):
        if not part:
            continue
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _filter(value: Any, name: str, path: str) -> Any:
    op, sep, arg = name.partition(":")
    op = op.strip()
    if op == "default":
        return (_literal(arg) if sep else None) if value is _MISSING or value is None else value
    if value is _MISSING:
        raise TemplateError(f"path {path!r} is not in the payload")
    try:
        return _apply(op, arg, value)
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"filter {op!r} on {path!r}: {exc}") from None


_SIMPLE: dict[str, Callable[[Any], Any]] = {
    "lower": lambda v: str(v).lower(),
    "upper": lambda v: str(v).upper(),
    "strip": lambda v: str(v).strip(),
    "str": str,
    "int": int,
    "float": float,
    "json": json.dumps,
}


def _apply(op: str, arg: str, value: Any) -> Any:
    simple = _SIMPLE
    if op in simple:
        return None if value is None and op != "json" else simple[op](value)
    if op == "join":
        return None if value is None else arg.join(str(v) for v in value)
    if op == "after":
        return None if value is None else str(value).rsplit(arg, 1)[-1]
    raise ValueError(f"unknown filter {op!r}")


def evaluate(expression: str, doc: Any) -> Any:
    """One placeholder's value: its path, through its filters."""
    path, *filters = [p.strip() for p in expression.split("|")]
    value = resolve(doc, path)
    for name in filters:
        value = _filter(value, name, path)
    if value is _MISSING:
        raise TemplateError(f"path {path!r} is not in the payload (add |default:… if it is optional)")
    return value


def render(template: Any, doc: Any) -> Any:
    """A template (string, mapping, list or literal) filled in from ``doc``."""
    if isinstance(template, dict):
        return {k: render(v, doc) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, doc) for v in template]
    if not isinstance(template, str):
        return template
    match = _PLACEHOLDER.fullmatch(template)
    if match and match.group(1) is not None:
        return evaluate(match.group(1), doc)

    def part(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        value = evaluate(m.group(1), doc)
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(part, template)


@dataclass(frozen=True)
class Condition:
    """One ``when`` clause of a mapping rule."""

    path: str
    op: str
    values: tuple[str, ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Parse ``type == refund.created`` and friends; ValueError with the accepted forms."""
        m = _CONDITION.match(text)
        if not m:
            raise ValueError(f"condition {text!r} is not `<path> ==|!=|in|not in <value>` or `<path> exists|missing`")
        op, raw = m.group("op"), m.group("value")
        if op in ("in", "not in"):
            if not (raw.startswith("[") and raw.endswith("]")):
                raise ValueError(f"condition {text!r}: `{op}` takes a list like [a, b]")
            values = tuple(_unquote(v) for v in raw[1:-1].split(",") if v.strip())
        elif op in ("exists", "missing"):
            values = ()
        else:
            values = (_unquote(raw),)
        return cls(m.group("path"), op, values, text)

    def holds(self, doc: Any) -> bool:
        """Whether the condition is true of ``doc``."""
        value = resolve(doc, self.path)
        if self.op in ("exists", "missing"):
            return (value is not _MISSING and value is not None) == (self.op == "exists")
        text = None if value is _MISSING else _text(value)
        if self.op == "==":
            return text == self.values[0]
        if self.op == "!=":
            return text != self.values[0]
        return (text in self.values) == (self.op == "in")

    def actual(self, doc: Any) -> str:
        """What the payload has at the condition's path, for error messages."""
        value = resolve(doc, self.path)
        return "missing" if value is _MISSING else repr(value)


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text
