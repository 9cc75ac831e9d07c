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
from agentos_schemas.subjects import is_foreign

from agentos_audit.canonical import split_canonical
from agentos_audit.classify import classify

#: Bump when what a row holds is derived differently; `verify` then asks for a rebuild.
PROJECTOR_VERSION = "2"

COLUMNS = (
    "seq",
    "id",
    "type",
    "source",
    "subject",
    "tenant",
    "correlationid",
    "causationid",
    "principal",
    "time",
    "traceparent",
    "trace_id",
    "agent",
    "task_id",
    "goal_id",
    "models",
    "tools",
    "cost_usd",
    "tokens",
    "tags",
    "policy_version",
    "datacontenttype",
    "dataschema",
    "extensions",
    "data_base64",
    "data",
)
#: The envelope's own members and AgentOS's extensions (which have columns); every other
#: attribute is an extension the sender set, kept in ``extensions``.
_NOT_EXTENSIONS = frozenset(WireEvent.__struct_fields__) | {"data"}
_members = msgspec.json.Decoder(dict[str, msgspec.Raw])
_TEXT_ATTRS = ("id", "source", "type", "subject", "tenant", "correlationid", "causationid", "principal", "traceparent")
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
    datacontenttype: str | None
    dataschema: str | None
    extensions: str
    """The sender's own extension attributes, as a JSON object (``{}`` when none)."""
    data_base64: str | None
    """Binary data as sent (``data`` is then ``null``)."""
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
        if not is_foreign(wire.type):
            codec.payload_class(wire)
    except codec.DecodeError as exc:
        return Rejection(exc.code, exc.reason)
    if b"\\u0000" in raw:  # a NUL in a decoded attribute was escaped in the JSON (bytes NULs do not decode)
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


_NO_FIELDS: dict[str, Any] = {}


@functools.cache
def _is_model(cls: type) -> bool:
    return isinstance(getattr(cls, "model_fields", None), dict)


def _values(obj: Any) -> dict[str, Any]:
    """A payload model's field values by name (a validated pydantic model keeps exactly its fields in
    ``__dict__``; reading it skips pydantic's slow miss path); empty for anything else, and None."""
    return obj.__dict__ if _is_model(type(obj)) else _NO_FIELDS


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class _Analysed(NamedTuple):
    agent: str | None
    task_id: str | None
    goal_id: str | None
    models: list[str]
    tools: list[str]
    cost_usd: float
    tokens: int
    policy_version: str | None


def _analyse(data: Any) -> _Analysed:
    """The analyst columns of a payload: its own fields, those of the policy request it carries
    (``policy.decided`` …), its usage's model calls and its context manifest's tools."""
    v = _values(data)
    request = v.get("request")
    r = _NO_FIELDS if request is None else _values(request)
    usage = v.get("usage")
    calls = () if usage is None else _values(usage).get("calls") or ()
    models = {c.model for c in calls} if calls else set()
    if r and _text(r.get("action")) == "model_call" and _text(r.get("resource")):
        models.add(r["resource"])
    tools: set[str] = set()
    manifest = v.get("manifest")
    for listed in (v.get("tools"), None if manifest is None else _values(manifest).get("tools")):
        if listed and isinstance(listed, tuple | list):
            tools.update(t for t in listed if isinstance(t, str))
    for tool in (_text(v.get("tool")), _text(r.get("tool"))):
        if tool:
            tools.add(tool)
    cost, tokens = 0.0, 0
    if calls:
        cost = float(sum(c.cost_usd for c in calls))
        tokens = int(sum(c.input_tokens + c.output_tokens for c in calls))
    return _Analysed(
        _text(v.get("agent")) or _text(r.get("agent")),
        _text(v.get("task_id")) or _text(r.get("task_id")),
        _text(v.get("goal_id")) or _text(r.get("goal_id")),
        sorted(models) if models else [],
        sorted(tools) if tools else [],
        cost,
        tokens,
        _text(v.get("policy_version")),
    )


def event_time(wire: WireEvent, stored: dt.datetime) -> dt.datetime:
    """The event's own time (UTC); the time JetStream stored it when the event has none."""
    t = wire.time or stored
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC)


def _validated(wire: WireEvent, payload: bytes) -> Any:
    """The payload as its catalogued model, or the :class:`Rejection` a dead letter would give."""
    try:
        data = codec.payload_class(wire).__pydantic_validator__.validate_json(payload)
        if wire.datahash is not None and codec.content_hash(payload) != wire.datahash:
            raise ValueError("datahash")
    except ValueError:  # the codec's own checks name the reason exactly as a dead letter would
        try:
            codec.to_event(wire, payload)
        except codec.DecodeError as exc:
            return Rejection(exc.code, exc.reason)
        raise
    return data


def extensions(raw: bytes) -> str:
    """The sender's extension attributes of a stored message (its canonical bytes), as JSON text."""
    body, headers = split_canonical(raw)
    if headers is not None:
        found = {k[3:]: msgspec.Raw(msgspec.json.encode(v)) for k, v in headers.items() if k[3:] not in _NOT_EXTENSIONS}
    else:
        found = {k: v for k, v in _members.decode(body).items() if k not in _NOT_EXTENSIONS}
    return msgspec.json.encode(found).decode() if found else "{}"


def foreign_payload(wire: WireEvent) -> bytes:
    """What the ``data`` column holds of a foreign-type event: its data member's JSON text
    (``null`` when it has none, or carries ``data_base64``)."""
    raw = bytes(wire.data)
    return raw if raw else b"null"


def _jsonb_text(payload: bytes) -> str:
    """The payload's JSON text as jsonb takes it (``\\u0000`` escapes become U+FFFD)."""
    text = payload.decode("utf-8")
    if "\\u0000" in text:
        text = _NUL_ESCAPE.sub("\\1\\\\ufffd", text)
    return text


def build_row(seq: int, wire: WireEvent, payload: bytes, stored: dt.datetime, raw: bytes = b"") -> Row | Rejection:
    """Validate the payload against the catalogue (a foreign type's is kept as it came) and derive
    the row; ``raw``, the canonical bytes, gives the sender's extension attributes."""
    data = None if is_foreign(wire.type) else _validated(wire, payload)
    if isinstance(data, Rejection):
        return data
    text = _jsonb_text(payload)
    a = _analyse(data)
    principal = wire.principal
    agent = a.agent
    if agent is None and principal and principal.startswith("agent:"):
        agent = principal[6:]
    return Row(
        seq,
        wire.id,
        wire.type,
        wire.source,
        wire.subject,
        wire.tenant or "default",
        wire.correlationid,
        wire.causationid,
        principal,
        event_time(wire, stored),
        wire.traceparent,
        trace_id(wire.traceparent),
        agent,
        a.task_id,
        a.goal_id,
        a.models,
        a.tools,
        a.cost_usd,
        a.tokens,
        classify(text),
        a.policy_version,
        wire.datacontenttype,
        wire.dataschema,
        extensions(raw) if raw else "{}",
        wire.data_base64,
        text,
    )


def comparable(values: tuple[Any, ...] | list[Any]) -> tuple[Any, ...]:
    """A row's values normalised for comparison and digests (jsonb and float round trips)."""
    out = list(values)
    out[COLUMNS.index("time")] = values[COLUMNS.index("time")].astimezone(dt.UTC)
    out[COLUMNS.index("cost_usd")] = float(values[COLUMNS.index("cost_usd")])
    for name in ("models", "tools", "tags"):
        out[COLUMNS.index(name)] = list(values[COLUMNS.index(name)] or [])
    out[COLUMNS.index("extensions")] = msgspec.json.decode(values[COLUMNS.index("extensions")] or "{}")
    out[-1] = msgspec.json.decode(values[-1])
    return tuple(out)


__all__ = [
    "COLUMNS",
    "PROJECTOR_VERSION",
    "Rejection",
    "Row",
    "build_row",
    "comparable",
    "event_time",
    "extensions",
    "foreign_payload",
    "open_envelope",
    "trace_id",
]
