"""CloudEvents wire codec: structured JSON (what AgentOS writes) and binary mode (``ce-*`` headers).

Pure functions, no I/O. Decoding failures raise :class:`DecodeError` with a stable ``code``
so a dead letter says exactly what was wrong.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from pydantic import ValidationError

from agentos_schemas.cespec import data_member, is_json
from agentos_schemas.envelope import (
    JSON,
    SPEC_VERSION,
    STRUCTURED_CONTENT_TYPE,
    Event,
    ForeignData,
    WireEvent,
    derived_event_id,
)
from agentos_schemas.subjects import is_foreign

if TYPE_CHECKING:
    from agentos_schemas.events import EventData

DecodeCode = Literal["encoding", "not_cloudevent", "unknown_type", "schema", "oversized", "claim_check"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WireEvent)
_BINARY_ATTRS = frozenset(WireEvent.__struct_fields__) - {"data", "data_base64", "datacontenttype"}


class DecodeError(ValueError):
    """The bytes are not a valid AgentOS CloudEvent; ``code`` classifies why."""

    def __init__(self, code: DecodeCode, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code: DecodeCode = code
        self.reason = reason


def data_bytes(data: EventData) -> bytes:
    """The payload's canonical JSON bytes (pydantic-core serializer, no intermediate dict)."""
    return data.__pydantic_serializer__.to_json(data)


def content_hash(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def encode(event: Event[Any], data: bytes | None = None, *, dataref: str | None = None) -> bytes:
    """Structured-mode JSON of ``event``. With ``dataref``, ``data`` is left out (claim check)."""
    attrs = event.attributes()
    if dataref is not None:
        attrs["dataref"] = dataref
        return _encoder.encode(attrs)
    if data is None:
        data = event.raw_data if event.raw_data is not None else data_bytes(event.data)
    if event.data_form == "json":
        attrs["data"] = msgspec.Raw(data)
    elif (member := data_member(data, event.data_form)) is not None:
        attrs[member[0]] = member[1]
    return _encoder.encode(attrs)


def payload_bytes(event: Event[Any]) -> bytes:
    """The bytes the event's data is published as: as sent when the gateway took it in, else the
    payload model's JSON."""
    return event.raw_data if event.raw_data is not None else data_bytes(event.data)


def message_id(event: Event[Any]) -> str:
    """The JetStream de-duplication id: the event id, or for a foreign type (whose ids are unique
    only per ``source``, as CloudEvents says) one derived from tenant, source and id."""
    if is_foreign(event.type):
        return derived_event_id("ingress.raw", event.tenant, event.source, event.id)
    return event.id


def headers_for(event: Event[Any]) -> dict[str, str]:
    """NATS headers: structured-mode marker, dedup id, and the routing attributes for cheap filtering."""
    headers = {
        "Content-Type": STRUCTURED_CONTENT_TYPE,
        "Nats-Msg-Id": message_id(event),
        "ce-type": event.type,
    }
    if event.traceparent:
        headers["traceparent"] = event.traceparent
    return headers


def decode_wire(body: bytes, headers: Mapping[str, str] | None, *, max_bytes: int) -> WireEvent:
    """Parse the envelope (structured or binary mode) without touching ``data``."""
    if len(body) > max_bytes:
        raise DecodeError(
            "oversized",
            f"{len(body)} bytes is over the {max_bytes}-byte limit; large payloads go by claim check",
        )
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("encoding", f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    headers = headers or {}
    if "ce-specversion" in headers:
        return _from_binary(body, headers)
    try:
        wire = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise DecodeError("not_cloudevent", f"not a structured CloudEvent: {exc}") from None
    if wire.specversion != SPEC_VERSION:
        raise DecodeError("not_cloudevent", f"specversion {wire.specversion!r} is not {SPEC_VERSION!r}")
    return wire


def _from_binary(body: bytes, headers: Mapping[str, str]) -> WireEvent:
    attrs: dict[str, Any] = {}
    for key, value in headers.items():
        name = key.lower()
        if name.startswith("ce-") and name[3:] in _BINARY_ATTRS:
            attrs[name[3:]] = value
    attrs["datacontenttype"] = headers.get("ce-datacontenttype", JSON)
    try:
        wire = msgspec.convert(attrs, WireEvent, strict=False)
    except msgspec.ValidationError as exc:
        raise DecodeError("not_cloudevent", f"binary-mode headers: {exc}") from None
    if wire.specversion != SPEC_VERSION:
        raise DecodeError("not_cloudevent", f"specversion {wire.specversion!r} is not {SPEC_VERSION!r}")
    wire.data = msgspec.Raw(body)
    return wire


def payload_class(wire: WireEvent) -> type[EventData]:
    from agentos_schemas.events import CATALOGUE  # loaded on the first decode (see the package's doc)

    try:
        return CATALOGUE[wire.type]
    except KeyError:
        raise DecodeError("unknown_type", f"event type {wire.type!r} is not in the catalogue") from None


def inline_data(wire: WireEvent) -> bytes | None:
    """The payload bytes carried in the event itself, if any."""
    raw = bytes(wire.data)
    if raw and raw != b"null":
        return raw
    if wire.data_base64 is not None:
        try:
            return base64.b64decode(wire.data_base64, validate=True)
        except ValueError:
            raise DecodeError("not_cloudevent", "data_base64 is not valid base64") from None
    return None


def foreign_event(wire: WireEvent, body: bytes) -> Event[ForeignData]:
    """A foreign-type event as stored (structured mode): attributes as sent, data as its bytes."""
    event: Event[ForeignData] = from_wire(wire, ForeignData())
    members = _members.decode(body)
    members.pop("data", None)
    members.pop("data_base64", None)
    event.wire = members
    event.raw_data, event.data_form = foreign_data(wire)
    return event


def foreign_data(wire: WireEvent) -> tuple[bytes, str]:
    """(data bytes, form) of a stored foreign-type event: its ``data_base64`` decoded, JSON data as
    its text, a string of non-JSON data as the text's UTF-8."""
    if wire.data_base64 is not None:
        return base64.b64decode(wire.data_base64), "base64"
    raw = bytes(wire.data)
    if not raw or raw == b"null":
        return b"", "none"
    if is_json(wire.datacontenttype) or raw[:1] != b'"':
        return raw, "json"
    return msgspec.json.decode(raw, type=str).encode(), "text"


def to_event(wire: WireEvent, raw: bytes) -> Event[Any]:
    """Validate ``raw`` against the payload class of ``wire.type`` and build the typed event."""
    cls = payload_class(wire)
    if wire.datahash is not None and content_hash(raw) != wire.datahash:
        raise DecodeError("claim_check", f"payload hash does not match datahash {wire.datahash!r}")
    try:
        data = cls.model_validate_json(raw)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
        raise DecodeError("schema", f"{wire.type} payload invalid: {errors}") from None
    return from_wire(wire, data)


def from_wire(wire: WireEvent, data: Any) -> Event[Any]:
    """The event of ``wire``'s attributes with ``data`` as its payload."""
    return Event(
        data=data,
        id=wire.id,
        source=wire.source,
        type=wire.type,
        tenant=wire.tenant or "default",
        subject=wire.subject,
        time=wire.time,
        dataschema=wire.dataschema,
        traceparent=wire.traceparent,
        tracestate=wire.tracestate,
        correlationid=wire.correlationid,
        causationid=wire.causationid,
        principal=wire.principal,
        datahash=wire.datahash,
    )


def decode(body: bytes, headers: Mapping[str, str] | None = None, *, max_bytes: int = 1 << 20) -> Event[Any]:
    """Decode and validate an event that carries its data inline."""
    wire = decode_wire(body, headers, max_bytes=max_bytes)
    if is_foreign(wire.type) and headers is None:
        return foreign_event(wire, body)
    raw = inline_data(wire)
    if raw is None:
        raise DecodeError("claim_check", "event has no data and no resolvable dataref")
    return keep_extensions(to_event(wire, raw), body, headers)


_KNOWN_MEMBERS = frozenset(WireEvent.__struct_fields__) | {"data"}
_members = msgspec.json.Decoder(dict[str, msgspec.Raw])


def extensions_of(body: bytes, headers: Mapping[str, str] | None = None) -> dict[str, msgspec.Raw]:
    """The extension attributes of a stored event that are not AgentOS's own (binary mode: its
    other ``ce-*`` headers), each one's JSON text."""
    if headers is not None and "ce-specversion" in headers:
        return {
            k[3:]: msgspec.Raw(_encoder.encode(v))
            for k, v in headers.items()
            if k.startswith("ce-") and k[3:] not in _KNOWN_MEMBERS
        }
    return {k: v for k, v in _members.decode(body).items() if k not in _KNOWN_MEMBERS}


def keep_extensions(event: Event[Any], body: bytes, headers: Mapping[str, str] | None = None) -> Event[Any]:
    """``event`` with the sender's extension attributes of ``body`` (if any) kept on it."""
    found = extensions_of(body, headers)
    if found:
        event.extensions = found
    return event
