"""The CloudEvents HTTP binding: binary, structured and batch requests into events to publish.

- **structured**: ``Content-Type: application/cloudevents+json``, the whole event in the body.
- **binary**: attributes in ``ce-*`` headers (percent-encoded, per the binding), ``Content-Type``
  is the ``datacontenttype``, the body is the data, of any media type.
- **batch**: ``Content-Type: application/cloudevents-batch+json``, a JSON array of structured
  events. Each event is judged on its own: the valid ones are published, the answer says per
  index which were accepted and why the others were refused (each refused one is dead-lettered).

Every event is first checked against the CloudEvents spec (:mod:`agentos_schemas.cespec`): what
it forbids is a 400 naming the attribute. Then by its ``type``:

- a catalogue type (``dev.agentos.…``) is validated against its payload model, as before;
  a ``dev.agentos.`` type the catalogue does not know is refused (422 ``unknown_type``);
- any other type is *foreign*: kept verbatim in the log under ``ingress.raw.<tenant>``, unless
  the tenant refuses foreign types (422 ``foreign_type_refused``).

Nothing of an accepted event is lost or changed: its attributes (extensions included, any JSON
value) are published as they came, and its data byte for byte (JSON as sent, unknown fields
kept; UTF-8 text as a string; anything else as ``data_base64``). AgentOS sets only ``tenant`` and
``principal`` (who sent it, from the API key) and adds ``correlationid`` when it is absent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from agentos_schemas import CATALOGUE, Event, codec
from agentos_schemas import cespec as spec
from agentos_schemas.codec import DecodeError
from agentos_schemas.envelope import ForeignData
from agentos_schemas.subjects import NamingError, check_token, is_foreign
from pydantic import BaseModel, ValidationError

from agentos_gateway.problems import Problem

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MAX_BATCH = 1000

Mode = Literal["binary", "structured", "batch"]
media_type = spec.media_type
is_json = spec.is_json
_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_members = msgspec.json.Decoder(dict[str, msgspec.Raw])
_time = msgspec.json.Decoder(dt.datetime)
_encoder = msgspec.json.Encoder()


@dataclass
class Incoming:
    """The events of one request: those to publish (with their index in the request) and, in a
    batch, the refused ones with their problem."""

    mode: Mode
    events: list[Event[Any]]
    indexes: list[int] = field(default_factory=list[int])
    refused: list[tuple[int, bytes, Problem]] = field(default_factory=list[tuple[int, bytes, Problem]])


@dataclass(frozen=True)
class Rules:
    """What a request may carry: the size limit, the caller's tenant, and whether foreign
    types are refused for it."""

    max_event_bytes: int
    tenant: str
    refuse_foreign: frozenset[str] = frozenset()

    def refuses(self, tenant: str) -> bool:
        return "*" in self.refuse_foreign or tenant in self.refuse_foreign


def parse(body: bytes, headers: Mapping[str, str], rules: Rules) -> Incoming:
    """Decode a ``POST /events`` request (headers with lower-case names) into events."""
    ctype = media_type(headers.get("content-type"))
    if ctype == BATCH:
        return parse_batch(body, rules)
    if ctype == STRUCTURED:
        return Incoming("structured", [one(body, None, rules)], [0])
    if any(name.startswith("ce-") for name in headers):
        return Incoming("binary", [one(body, headers, rules)], [0])
    raise Problem(
        415,
        "unsupported_media_type",
        f"Content-Type {ctype or '(none)'!r} is not a CloudEvent: send "
        f"{STRUCTURED} (structured), {BATCH} (batch), or binary mode (ce-* headers)",
    )


def parse_batch(body: bytes, rules: Rules) -> Incoming:
    """A batch: each item judged on its own (module docs)."""
    try:
        items = _batch_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise Problem(400, "invalid_json", f"a batch must be a JSON array of structured CloudEvents: {exc}") from None
    if not items:
        raise Problem(400, "empty_batch", "the batch is an empty array")
    if len(items) > MAX_BATCH:
        raise Problem(413, "batch_too_large", f"{len(items)} events in one batch; at most {MAX_BATCH}")
    incoming = Incoming("batch", [])
    for index, raw in enumerate(items):
        try:
            incoming.events.append(one(bytes(raw), None, rules))
            incoming.indexes.append(index)
        except Problem as p:
            incoming.refused.append((index, bytes(raw), p))
    return incoming


def one(body: bytes, headers: Mapping[str, str] | None, rules: Rules) -> Event[Any]:
    """One structured event (``headers`` None) or one binary-mode event, checked and built."""
    if len(body) > rules.max_event_bytes:
        raise Problem(
            413,
            "event_too_large",
            f"{len(body)} bytes is over the {rules.max_event_bytes}-byte limit of one event",
        )
    try:
        parsed = spec.structured(body) if headers is None else spec.binary(headers, body)
    except spec.SpecError as exc:
        raise Problem(400, exc.code, exc.reason, attribute=exc.attribute) from None
    if "dataref" in parsed.extensions:
        raise Problem(
            422,
            "dataref_refused",
            "events sent to the gateway must carry their data inline (dataref is set by AgentOS itself)",
            attribute="dataref",
        )
    tenant = _tenant(parsed, rules.tenant)
    if is_foreign(parsed.type):
        if rules.refuses(tenant):
            raise Problem(
                422,
                "foreign_type_refused",
                f"tenant {tenant!r} accepts only AgentOS's own event types (dev.agentos.…), not {parsed.type!r}",
                attribute="type",
            )
        event = _foreign(parsed, tenant)
    else:
        event = _catalogued(parsed)
    event.tenant = tenant
    event.wire = parsed.members
    event.raw_data = parsed.data if parsed.data is not None else b""
    event.data_form = parsed.form
    return event


def encode(event: Event[Any]) -> bytes:
    """An event as the structured JSON the log would keep (what a refused batch item is kept as)."""
    return codec.encode(event)


def _tenant(parsed: spec.Parsed, default: str) -> str:
    raw = parsed.extensions.get("tenant")
    try:
        tenant = default if raw is None else msgspec.json.decode(raw, type=str)
        return check_token("tenant", tenant)
    except (msgspec.ValidationError, NamingError) as exc:
        raise Problem(422, "invalid_tenant", str(exc), attribute="tenant") from None


def _foreign(parsed: spec.Parsed, tenant: str) -> Event[Any]:
    attrs = parsed.attrs
    when = _time.decode(_encoder.encode(attrs["time"])) if "time" in attrs else None
    return Event(
        data=ForeignData(),
        id=attrs["id"],
        source=attrs["source"],
        type=attrs["type"],
        tenant=tenant,
        subject=attrs.get("subject"),
        time=when,
        dataschema=attrs.get("dataschema"),
    )


def _catalogued(parsed: spec.Parsed) -> Event[Any]:
    """A ``dev.agentos.`` event: a catalogue type, with JSON data its payload model accepts."""
    cls = CATALOGUE.get(parsed.type)
    if cls is None:
        raise Problem(
            422,
            "unknown_type",
            f"event type {parsed.type!r} is in AgentOS's namespace (dev.agentos.) but not in its catalogue",
            attribute="type",
        )
    if parsed.data is None:
        raise Problem(422, "missing_data", f"event {parsed.attrs['id']!r} of type {parsed.type!r} has no data")
    if parsed.form != "json":
        raise Problem(
            422,
            "data_not_json",
            f"{parsed.type} data is a JSON object; datacontenttype {parsed.content_type!r} is not JSON",
            attribute="datacontenttype",
        )
    _refuse_forbidden_fields(cls, parsed.data)
    wire = {**parsed.members, "data": msgspec.Raw(parsed.data)}
    try:
        return codec.to_event(codec.decode_wire(_encoder.encode(wire), None, max_bytes=1 << 30), parsed.data)
    except DecodeError as exc:
        status = 422 if exc.code in ("schema", "claim_check", "unknown_type") else 400
        raise Problem(status, "schema_invalid" if exc.code == "schema" else exc.code, exc.reason) from None


def _refuse_forbidden_fields(cls: type[BaseModel], data: bytes) -> None:
    """A payload model with ``extra="forbid"`` names the unknown fields; any other keeps them."""
    if cls.model_config.get("extra") != "forbid":
        return
    try:
        cls.model_validate_json(data)
    except ValidationError as exc:
        extra = [".".join(str(p) for p in e["loc"]) for e in exc.errors() if e["type"] == "extra_forbidden"]
        if extra:
            raise Problem(
                422, "unknown_fields", f"{cls.__name__} does not allow field(s) {', '.join(extra)}", attribute="data"
            ) from None
