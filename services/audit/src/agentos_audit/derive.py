"""From one stored message to one projection row: a pure function, shared by the live projector,
``rebuild`` and ``verify`` (which re-derives every row and compares it with what Postgres holds).

Two steps, because a claim-checked payload must be fetched in between:
:func:`open_envelope` parses the envelope from the canonical bytes, and :func:`build_row`
validates the payload against the catalogue and extracts the analyst columns.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any, NamedTuple

import msgspec
from agentos_schemas import codec
from agentos_schemas.envelope import WireEvent

from agentos_audit.canonical import split_canonical
from agentos_audit.classify import classify

#: Bump when what a row holds is derived differently; `verify` then asks for a rebuild.
PROJECTOR_VERSION = "1"

COLUMNS = (
    "seq", "id", "type", "source", "subject", "tenant", "correlationid", "causationid", "principal",
    "time", "traceparent", "trace_id", "agent", "task_id", "goal_id", "models", "tools", "cost_usd",
    "tokens", "tags", "policy_version", "data",
)
_TEXT_ATTRS = ("id", "source", "type", "subject", "tenant", "correlationid", "causationid", "principal",
               "traceparent")
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


class Row(NamedTuple):
    """One row of ``audit.events``, in column order (see :data:`COLUMNS`)."""

    seq: int
    id: str
    type: str
    source: str
    subject: str | None
    tenant: str
    correlationid: str | None
    causationid: str | None
    principal: str | None
    time: dt.datetime
    traceparent: str | None
    trace_id: str | None
    agent: str | None
    task_id: str | None
    goal_id: str | None
    models: list[str]
    tools: list[str]
    cost_usd: float
    tokens: int
    tags: list[str]
    policy_version: str | None
    data: str
    """The payload's JSON text, as received (``\\u0000`` escapes, which jsonb refuses, become U+FFFD)."""


class Rejection(NamedTuple):
    """A stored message that is not a valid AgentOS event; ``code`` as in the dead-letter queue."""

    code: str
    reason: str


def open_envelope(raw: bytes, max_bytes: int) -> WireEvent | Rejection:
    """Parse the envelope of a message's canonical bytes, and check its type is catalogued."""
    body, headers = split_canonical(raw)
    try:
        wire = codec.decode_wire(body, headers, max_bytes=max_bytes)
        codec.payload_class(wire)
    except codec.DecodeError as exc:
        return Rejection(exc.code, exc.reason)
    for name in _TEXT_ATTRS:
        value = getattr(wire, name)
        if isinstance(value, str) and "\x00" in value:
            return Rejection("not_cloudevent", f"attribute {name!r} contains NUL, which text columns cannot store")
    return wire


def trace_id(traceparent: str | None) -> str | None:
    """The 32-hex trace id inside a W3C ``traceparent``."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


@functools.cache
def _fields(cls: type) -> frozenset[str]:
    return frozenset(getattr(cls, "model_fields", ()))


def _attr(data: Any, name: str) -> Any:
    """``data.name`` if the payload model has that field (pydantic's miss path is slow)."""
    return getattr(data, name) if name in _fields(type(data)) else None


def _str_attr(data: Any, name: str) -> str | None:
    value = _attr(data, name)
    return value if isinstance(value, str) and value else None


def _usage(data: Any) -> tuple[list[str], float, int]:
    calls = _attr(_attr(data, "usage"), "calls") or ()
    models = sorted({c.model for c in calls})
    cost = float(sum(c.cost_usd for c in calls))
    tokens = int(sum(c.input_tokens + c.output_tokens for c in calls))
    return models, cost, tokens


def _tools(data: Any) -> list[str]:
    found: set[str] = set()
    for holder in (data, _attr(data, "manifest")):
        tools = _attr(holder, "tools")
        if isinstance(tools, tuple | list):
            found.update(t for t in tools if isinstance(t, str))
    for holder in (data, _attr(data, "request")):
        tool = _str_attr(holder, "tool")
        if tool:
            found.add(tool)
    return sorted(found)


def _about(data: Any, name: str) -> str | None:
    """A field of the payload, or of the policy request it carries (``policy.decided`` …)."""
    return _str_attr(data, name) or _str_attr(_attr(data, "request"), name)


def _requested_model(data: Any) -> list[str]:
    request = _attr(data, "request")
    if _str_attr(request, "action") == "model_call" and _str_attr(request, "resource"):
        return [request.resource]
    return []


def event_time(wire: WireEvent, stored: dt.datetime) -> dt.datetime:
    """The event's own time (UTC); the time JetStream stored it when the event has none."""
    t = wire.time or stored
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC)


def build_row(seq: int, wire: WireEvent, payload: bytes, stored: dt.datetime) -> Row | Rejection:
    """Validate the payload against the catalogue and derive the row."""
    try:
        data = codec.payload_class(wire).model_validate_json(payload)
        if wire.datahash is not None and codec.content_hash(payload) != wire.datahash:
            raise ValueError("datahash")
    except ValueError:  # the codec's own checks name the reason exactly as a dead letter would
        try:
            codec.to_event(wire, payload)
        except codec.DecodeError as exc:
            return Rejection(exc.code, exc.reason)
        raise
    text = payload.decode("utf-8")
    if "\\u0000" in text:
        text = _NUL_ESCAPE.sub("\\1\\\\ufffd", text)
    models, cost, tokens = _usage(data)
    principal = wire.principal
    agent = _about(data, "agent")
    if agent is None and principal and principal.startswith("agent:"):
        agent = principal[6:]
    return Row(
        seq, wire.id, wire.type, wire.source, wire.subject, wire.tenant or "default", wire.correlationid,
        wire.causationid, principal, event_time(wire, stored), wire.traceparent, trace_id(wire.traceparent),
        agent, _about(data, "task_id"), _about(data, "goal_id"), sorted({*models, *_requested_model(data)}),
        _tools(data), cost, tokens, classify(text), _str_attr(data, "policy_version"), text,
    )


def comparable(values: tuple[Any, ...] | list[Any]) -> tuple[Any, ...]:
    """A row's values normalised for comparison and digests (jsonb and float round trips)."""
    out = list(values)
    out[COLUMNS.index("time")] = values[COLUMNS.index("time")].astimezone(dt.UTC)
    out[COLUMNS.index("cost_usd")] = float(values[COLUMNS.index("cost_usd")])
    for name in ("models", "tools", "tags"):
        out[COLUMNS.index(name)] = list(values[COLUMNS.index(name)] or [])
    out[-1] = msgspec.json.decode(values[-1])
    return tuple(out)


__all__ = [
    "COLUMNS", "PROJECTOR_VERSION", "Rejection", "Row", "build_row", "comparable", "event_time",
    "open_envelope", "trace_id",
]
