"""The CloudEvents HTTP binding: binary, structured and batch requests into validated typed events.

- **structured**: ``Content-Type: application/cloudevents+json``, the whole event in the body.
- **binary**: attributes in ``ce-*`` headers (percent-encoded, per the binding), ``Content-Type``
  is the ``datacontenttype`` and must be JSON, the body is ``data``.
- **batch**: ``Content-Type: application/cloudevents-batch+json``, a JSON array of structured
  events. A batch is **all or nothing**: if any item is invalid none is published, and the
  problem lists every bad item by index; a corrected batch can be resent as a whole, because
  event ids make resending the good items harmless.

Validation is the catalogue's, through :mod:`agentos_schemas.codec`; a failure becomes a
:class:`~agentos_gateway.problems.Problem` that says exactly what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

import msgspec
from agentos_schemas import Event, codec
from agentos_schemas.codec import DecodeError
from agentos_schemas.subjects import NamingError, check_token

from agentos_gateway.problems import Problem

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED = ("id", "source", "specversion", "type")
MAX_BATCH = 1000

Mode = Literal["binary", "structured", "batch"]
_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass
class Incoming:
    """The events of one request and the mode they came in."""

    mode: Mode
    events: list[Event[Any]]


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(ctype: str) -> bool:
    """Whether a media type is JSON (``application/json`` or any ``+json``)."""
    return ctype in ("application/json", "text/json") or ctype.endswith("+json")


def parse(body: bytes, headers: Mapping[str, str], *, max_event_bytes: int, tenant: str) -> Incoming:
    """Decode a ``POST /events`` request (headers with lower-case names) into validated events."""
    ctype = media_type(headers.get("content-type"))
    if ctype == BATCH:
        return Incoming("batch", parse_batch(body, max_event_bytes=max_event_bytes, tenant=tenant))
    if ctype == STRUCTURED:
        return Incoming("structured", [decode_one(body, None, max_event_bytes=max_event_bytes, tenant=tenant)])
    if any(name.startswith("ce-") for name in headers):
        if ctype and not is_json(ctype):
            raise Problem(
                415,
                "unsupported_media_type",
                f"binary-mode data must be JSON (the catalogue's payloads are JSON objects); Content-Type is {ctype!r}",
            )
        ce = {k: unquote(v) for k, v in headers.items() if k.startswith("ce-")}
        ce["ce-datacontenttype"] = ctype or "application/json"
        missing = [f"ce-{a}" for a in REQUIRED if f"ce-{a}" not in ce]
        if missing:
            raise Problem(400, "missing_attributes", f"binary mode: missing required header(s) {', '.join(missing)}")
        return Incoming("binary", [decode_one(body, ce, max_event_bytes=max_event_bytes, tenant=tenant)])
    raise Problem(
        415,
        "unsupported_media_type",
        f"Content-Type {ctype or '(none)'!r} is not a CloudEvent: send "
        f"{STRUCTURED} (structured), {BATCH} (batch), or binary mode (ce-* headers, JSON body)",
    )


def parse_batch(body: bytes, *, max_event_bytes: int, tenant: str) -> list[Event[Any]]:
    """A batch: every item valid, or a 422 listing each bad item."""
    try:
        items = _batch_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise Problem(400, "invalid_json", f"a batch must be a JSON array of structured CloudEvents: {exc}") from None
    if not items:
        raise Problem(400, "empty_batch", "the batch is an empty array")
    if len(items) > MAX_BATCH:
        raise Problem(413, "batch_too_large", f"{len(items)} events in one batch; at most {MAX_BATCH}")
    events: list[Event[Any]] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            events.append(decode_one(bytes(raw), None, max_event_bytes=max_event_bytes, tenant=tenant))
        except Problem as p:
            errors.append({"index": index, "status": p.status, "code": p.code, "detail": p.detail})
    if errors:
        raise Problem(
            422,
            "batch_rejected",
            f"{len(errors)} of {len(items)} events are invalid; none was published (batches are all or nothing)",
            errors=errors,
        )
    return events


def decode_one(body: bytes, ce_headers: Mapping[str, str] | None, *, max_event_bytes: int, tenant: str) -> Event[Any]:
    """One structured event (``ce_headers`` None) or one binary-mode event, validated."""
    try:
        wire = codec.decode_wire(body, ce_headers, max_bytes=max_event_bytes)
        if wire.dataref is not None:
            raise Problem(
                422,
                "dataref_refused",
                "events sent to the gateway must carry their data inline (dataref is set by AgentOS itself)",
            )
        ctype = media_type(wire.datacontenttype)
        if ctype and not is_json(ctype):
            raise Problem(415, "unsupported_media_type", f"datacontenttype {ctype!r} is not JSON")
        raw = codec.inline_data(wire)
        if raw is None:
            raise Problem(422, "missing_data", f"event {wire.id!r} of type {wire.type!r} has no data")
        event = codec.to_event(wire, raw)
    except DecodeError as exc:
        raise problem_for(exc, body, binary=ce_headers is not None) from None
    event.tenant = wire.tenant or tenant
    try:
        check_token("tenant", event.tenant)
    except NamingError as exc:
        raise Problem(422, "invalid_tenant", str(exc)) from None
    return event


def problem_for(exc: DecodeError, body: bytes, *, binary: bool) -> Problem:
    """The HTTP problem for a codec failure, with the most precise diagnosis available."""
    if exc.code == "oversized":
        return Problem(413, "event_too_large", exc.reason)
    if exc.code == "encoding":
        return Problem(400, "invalid_encoding", exc.reason)
    if exc.code == "unknown_type":
        return Problem(422, "unknown_type", exc.reason)
    if exc.code == "schema":
        if binary and not _valid_json(body):
            return Problem(400, "invalid_json", "binary-mode body is not valid JSON")
        return Problem(422, "schema_invalid", exc.reason)
    if exc.code == "claim_check":
        return Problem(422, "claim_check", exc.reason)
    return _diagnose_envelope(exc, body, binary=binary)


def _diagnose_envelope(exc: DecodeError, body: bytes, *, binary: bool) -> Problem:
    if binary:
        return Problem(400, "invalid_attributes", exc.reason)
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as err:
        return Problem(400, "invalid_json", f"body is not valid JSON: {err}")
    if not isinstance(doc, dict):
        return Problem(400, "not_an_object", f"a structured CloudEvent is a JSON object, not {type(doc).__name__}")
    missing = [a for a in REQUIRED if a not in doc]
    if missing:
        return Problem(400, "missing_attributes", f"missing required attribute(s): {', '.join(missing)}")
    return Problem(400, "invalid_attributes", exc.reason)


def _valid_json(body: bytes) -> bool:
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return True
