"""The CloudEvents 1.0 envelope that every AgentOS event travels in.

The envelope is a msgspec Struct: it is decoded and encoded on every hop, and
msgspec does that several times faster than pydantic. Payloads (``data``) are
pydantic models from :mod:`agentos_schemas.events`, which are the contract types.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Generic, TypeVar

import msgspec
import uuid_utils
from pydantic import BaseModel

SPEC_VERSION = "1.0"
JSON = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

#: CloudEvents extension attributes AgentOS sets (all lower-case, per the spec).
EXTENSIONS = (
    "traceparent",
    "tracestate",
    "correlationid",
    "causationid",
    "principal",
    "tenant",
    "dataref",
    "datahash",
)

D = TypeVar("D", bound=BaseModel)


def new_event_id() -> str:
    """A UUIDv7: unique, and sortable by creation time."""
    return str(uuid_utils.uuid7())


def id_time(event_id: str) -> dt.datetime | None:
    """When a UUIDv7 id was made (its milliseconds, less one second of margin), where a reader of
    what followed can start in the log; None for ids that carry no time (uuid5 ids from
    :func:`derived_event_id`, or anything that is not a UUID)."""
    try:
        value = uuid.UUID(event_id)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return dt.datetime.fromtimestamp((value.int >> 80) / 1000 - 1, dt.UTC)


_NAMESPACE = uuid_utils.UUID("5f0c1a2e-7c1d-4b7e-9a51-6a0e3f2b8c40")


def derived_event_id(*parts: str) -> str:
    """A deterministic id for an event that must be the same however often it is produced
    (a retried handler republishing its result is then de-duplicated by JetStream)."""
    return str(uuid_utils.uuid5(_NAMESPACE, "/".join(parts)))


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Attributes(msgspec.Struct, omit_defaults=True):
    """The CloudEvents context attributes and AgentOS extensions."""

    specversion: Annotated[str, _doc("CloudEvents version; always 1.0")]
    id: Annotated[str, _doc("Unique event id (UUIDv7, sortable by time); the dedup key")]
    source: Annotated[str, _doc("The service or system that emitted the event")]
    type: Annotated[str, _doc("dev.agentos.<domain>.<event>.v<major>")]
    subject: Annotated[str | None, _doc("The workflow or entity the event concerns")] = None
    time: Annotated[dt.datetime | None, _doc("When the event happened (RFC 3339)")] = None
    datacontenttype: Annotated[str | None, _doc("application/json")] = None
    dataschema: Annotated[str | None, _doc("The payload's contract in contracts/events/")] = None
    traceparent: Annotated[str | None, _doc("W3C trace context of the emitting span")] = None
    tracestate: Annotated[str | None, _doc("W3C trace state")] = None
    correlationid: Annotated[str | None, _doc("The goal/workflow every event of it shares")] = None
    causationid: Annotated[str | None, _doc("Id of the event that caused this one")] = None
    principal: Annotated[str | None, _doc("Who acted: user:<id>, service:<name>, agent:<name>")] = None
    tenant: Annotated[str | None, _doc("Tenant; also a token of the NATS subject")] = None
    dataref: Annotated[str | None, _doc("Claim check: where the payload is stored when not inline")] = None
    datahash: Annotated[str | None, _doc("sha256:<hex> of the payload bytes, set with dataref")] = None


class WireEvent(Attributes, omit_defaults=True):
    """A structured-mode CloudEvent exactly as it is on the wire; ``data`` left undecoded."""

    data: msgspec.Raw = msgspec.Raw(b"")
    """Undecoded payload JSON; empty when absent (binary mode or claim check)."""
    data_base64: str | None = None


class ForeignData(BaseModel):
    """The payload of a foreign-type event (a CloudEvent type outside ``dev.agentos.``): nothing
    typed; its data is the bytes it came with (:attr:`Event.raw_data`, in :attr:`Event.data_form`)."""

    model_config = {"frozen": True}


class Event(Generic[D]):
    """A decoded CloudEvent whose ``data`` is a validated, typed payload.

    What an outside sender wrote is kept with it: ``extensions`` (the extension attributes besides
    AgentOS's own, each one's JSON text, kept when the event is read from the log and written
    again, as a replay's copy is); for an event the gateway took in, ``wire`` (every attribute as
    written, encoded as it came, with only ``tenant`` and ``principal`` set by AgentOS) and
    ``raw_data`` (the data bytes as sent: unknown fields kept; text or binary for a foreign type),
    carried as ``data_form`` says: ``json``, ``text`` (a JSON string), ``base64``
    (``data_base64``) or ``none``.
    """

    __slots__ = (
        "causationid",
        "correlationid",
        "data",
        "data_form",
        "datahash",
        "dataschema",
        "extensions",
        "id",
        "principal",
        "raw_data",
        "source",
        "subject",
        "tenant",
        "time",
        "traceparent",
        "tracestate",
        "type",
        "wire",
    )

    def __init__(
        self,
        *,
        data: D,
        source: str,
        type: str,
        tenant: str,
        subject: str | None = None,
        id: str | None = None,
        time: dt.datetime | None = None,
        dataschema: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        correlationid: str | None = None,
        causationid: str | None = None,
        principal: str | None = None,
        datahash: str | None = None,
    ) -> None:
        self.id = id or new_event_id()
        self.source = source
        self.type = type
        self.subject = subject
        self.time = time or utc_now()
        self.dataschema = dataschema
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.correlationid = correlationid or self.id
        self.causationid = causationid
        self.principal = principal
        self.tenant = tenant
        self.data = data
        self.datahash = datahash
        self.extensions: dict[str, msgspec.Raw] | None = None
        self.wire: dict[str, msgspec.Raw] | None = None
        self.raw_data: bytes | None = None
        self.data_form: str = "json"

    def attributes(self) -> dict[str, Any]:
        """The CloudEvent attributes (everything but ``data``), without empty ones."""
        if self.wire is not None:
            return self._wire_attributes()
        attrs: dict[str, Any] = {}
        for name in _ATTRIBUTE_SLOTS:
            value = getattr(self, name)
            if value is not None:
                attrs[name] = value
        attrs["specversion"] = SPEC_VERSION
        attrs["datacontenttype"] = JSON
        if self.extensions:
            for name, value in self.extensions.items():
                attrs.setdefault(name, value)
        return attrs

    def _wire_attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = dict(self.wire or {})
        attrs["tenant"] = self.tenant
        if self.principal is not None:
            attrs["principal"] = self.principal
        for name in ("traceparent", "correlationid", "datahash"):  # what AgentOS may add, never replace
            value = getattr(self, name)
            if value is not None and name not in attrs:
                attrs[name] = value
        return attrs

    def __repr__(self) -> str:
        return f"Event(type={self.type!r}, id={self.id!r}, subject={self.subject!r})"


_ATTRIBUTE_SLOTS = tuple(
    name for name in Event.__slots__ if name not in ("data", "data_form", "extensions", "raw_data", "wire")
)


def envelope_json_schema() -> dict[str, Any]:
    """JSON Schema of the structured envelope (``data`` left open), for ``contracts/``."""
    _, components = msgspec.json.schema_components([Attributes], ref_template="#/$defs/{name}")
    schema = dict(components["Attributes"])
    props = dict(schema["properties"])
    props["specversion"] = {"const": SPEC_VERSION}
    schema["properties"] = props
    schema["title"] = "AgentOS CloudEvent envelope"
    return schema
