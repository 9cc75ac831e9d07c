"""What the CloudEvents 1.0 spec and its JSON format allow, checked member by member.

:func:`structured` reads one structured-mode event (``application/cloudevents+json``) and
:func:`binary` one binary-mode event (``ce-*`` headers, the body as data) into a :class:`Parsed`:
the attributes **exactly as sent** (each member's JSON text, :class:`msgspec.Raw`) and the data as
bytes, so an event can be re-encoded without losing or changing anything of it. What the spec
forbids raises :class:`SpecError` naming the attribute:

- ``id``, ``type``: strings, not empty; ``source``: a non-empty URI-reference (RFC 3986);
  ``specversion``: present and ``1.0``;
- ``dataschema``: an absolute URI; ``subject``, ``datacontenttype``: not empty when present;
  ``time``: an RFC 3339 timestamp;
- every attribute name: lower-case ASCII letters and digits only (``data`` and ``data_base64``
  are the format's members, not attributes); ``data`` and ``data_base64`` not both; ``data_base64``
  valid base64.

Context attributes must be strings; an extension attribute may hold any JSON value in structured
mode (and is a string in binary mode). Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

import msgspec
from rfc3339_validator import validate_rfc3339
from rfc3986_validator import validate_rfc3986

SPEC_VERSION = "1.0"
REQUIRED = ("id", "source", "specversion", "type")
CONTEXT = (*REQUIRED, "datacontenttype", "dataschema", "subject", "time")
NAME = re.compile(r"^[a-z0-9]+$")
DataForm = Literal["json", "text", "base64", "none"]
_members = msgspec.json.Decoder(dict[str, msgspec.Raw])
_string = msgspec.json.Decoder(str)
_encoder = msgspec.json.Encoder()


class SpecError(ValueError):
    """The event breaks the CloudEvents spec; ``attribute`` names what, ``code`` classifies it."""

    def __init__(self, code: str, attribute: str | None, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.attribute = attribute
        self.reason = reason


@dataclass
class Parsed:
    """One CloudEvent as sent: ``members`` holds every attribute's JSON text (data left out),
    ``attrs`` the context attributes decoded, ``data`` the data bytes in its ``form``."""

    members: dict[str, msgspec.Raw]
    attrs: dict[str, str]
    data: bytes | None = None
    form: DataForm = "none"
    extensions: dict[str, msgspec.Raw] = field(default_factory=dict[str, msgspec.Raw])

    @property
    def type(self) -> str:
        return self.attrs["type"]

    @property
    def content_type(self) -> str | None:
        return self.attrs.get("datacontenttype")


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """Whether data of this ``datacontenttype`` is JSON (absent means JSON in the JSON format)."""
    ctype = media_type(content_type)
    return ctype in ("", "application/json", "text/json") or ctype.endswith("+json")


def structured(body: bytes) -> Parsed:
    """A structured-mode event: a JSON object of attributes plus ``data`` or ``data_base64``."""
    try:
        doc = _members.decode(body)
    except msgspec.ValidationError:
        raise SpecError("not_an_object", None, "a structured CloudEvent is a JSON object") from None
    except msgspec.DecodeError as exc:
        raise SpecError("invalid_json", None, f"body is not valid JSON: {exc}") from None
    return from_members(doc)


def from_members(doc: dict[str, msgspec.Raw]) -> Parsed:
    """Check a structured event's members (already split into raw JSON values)."""
    data, data_b64 = doc.pop("data", None), doc.pop("data_base64", None)
    if data is not None and data_b64 is not None:
        raise SpecError("data_conflict", "data_base64", "an event carries data or data_base64, not both")
    attrs: dict[str, str] = {}
    extensions: dict[str, msgspec.Raw] = {}
    for name, raw in doc.items():
        _check_name(name)
        if name in CONTEXT:
            attrs[name] = _context_string(name, raw)
        else:
            extensions[name] = raw
    check_attributes(attrs)
    parsed = Parsed(doc, attrs, extensions=extensions)
    if data_b64 is not None:
        parsed.data, parsed.form = _base64(data_b64), "base64"
    elif data is not None and bytes(data) != b"null":
        parsed.data, parsed.form = _structured_data(bytes(data), attrs.get("datacontenttype"))
    return parsed


def binary(headers: Mapping[str, str], body: bytes) -> Parsed:
    """A binary-mode event: attributes in ``ce-*`` headers (percent-encoded, as the HTTP binding
    says), ``Content-Type`` as ``datacontenttype``, the body as the data, byte for byte."""
    attrs: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        if name.startswith("ce-"):
            attrs[name[3:]] = unquote(value)
    if "datacontenttype" in attrs:
        raise SpecError("invalid_attribute", "datacontenttype", "binary mode carries datacontenttype as Content-Type")
    if (ctype := headers.get("content-type")) is not None:
        attrs["datacontenttype"] = ctype
    for name in attrs:
        _check_name(name)
    check_attributes(attrs)
    members = {name: msgspec.Raw(_encoder.encode(value)) for name, value in attrs.items()}
    extensions = {name: raw for name, raw in members.items() if name not in CONTEXT}
    parsed = Parsed(members, {k: v for k, v in attrs.items() if k in CONTEXT}, extensions=extensions)
    if body:
        parsed.data, parsed.form = body, _binary_form(body, attrs.get("datacontenttype"))
    return parsed


def _binary_form(body: bytes, content_type: str | None) -> DataForm:
    """How binary-mode data is kept in the structured JSON the log stores: JSON as JSON (it must
    parse), UTF-8 text as a string, anything else (another charset, binary) as ``data_base64``."""
    if is_json(content_type):
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError:
            if content_type:
                raise SpecError("invalid_json", "data", f"the body is not valid JSON ({content_type})") from None
        else:
            return "json"
    return _text_or_base64(body, content_type)


def check_attributes(attrs: Mapping[str, str]) -> None:
    """The spec's rules for the context attributes' values (module docs)."""
    for name in REQUIRED:
        if name not in attrs:
            raise SpecError("missing_attribute", name, f"required attribute {name!r} is missing")
    if attrs["specversion"] != SPEC_VERSION:
        raise SpecError(
            "unsupported_specversion", "specversion", f"specversion {attrs['specversion']!r} is not {SPEC_VERSION!r}"
        )
    for name in ("id", "type", "source", "subject", "datacontenttype", "dataschema"):
        if name in attrs and not attrs[name]:
            raise SpecError("empty_attribute", name, f"attribute {name!r} must not be empty")
    if not validate_rfc3986(attrs["source"], rule="URI_reference"):
        raise SpecError("invalid_attribute", "source", f"source {attrs['source']!r} is not a URI-reference")
    if "dataschema" in attrs and not validate_rfc3986(attrs["dataschema"], rule="URI"):
        raise SpecError("invalid_attribute", "dataschema", f"dataschema {attrs['dataschema']!r} is not an absolute URI")
    if "time" in attrs and not validate_rfc3339(attrs["time"]):
        raise SpecError("invalid_attribute", "time", f"time {attrs['time']!r} is not an RFC 3339 timestamp")


_GOOD_NAMES: set[str] = set(CONTEXT)
"""Attribute names already found well-formed (the same few names come with every event)."""


def _check_name(name: str) -> None:
    if name in _GOOD_NAMES:
        return
    if len(_GOOD_NAMES) < 4096 and NAME.match(name):
        _GOOD_NAMES.add(name)
        return
    if not NAME.match(name):
        raise SpecError(
            "invalid_attribute_name",
            name,
            f"attribute name {name!r} must consist of lower-case ASCII letters and digits only",
        )


def _context_string(name: str, raw: msgspec.Raw) -> str:
    try:
        return _string.decode(raw)
    except msgspec.ValidationError:
        raise SpecError("invalid_attribute", name, f"attribute {name!r} must be a string") from None


def _base64(raw: msgspec.Raw) -> bytes:
    try:
        return base64.b64decode(_string.decode(raw), validate=True)
    except (msgspec.ValidationError, binascii.Error, ValueError):
        raise SpecError("invalid_data", "data_base64", "data_base64 is not a base64 string") from None


def _structured_data(raw: bytes, content_type: str | None) -> tuple[bytes, DataForm]:
    """JSON data stays its JSON text; with a non-JSON ``datacontenttype``, a string is the text."""
    if is_json(content_type):
        return raw, "json"
    if raw[:1] == b'"':
        return _string.decode(raw).encode(), "text"
    raise SpecError(
        "invalid_data",
        "data",
        f"data of datacontenttype {content_type!r} must be a string (or data_base64 for binary data)",
    )


def _text_or_base64(body: bytes, content_type: str | None) -> DataForm:
    charset = re.search(r"charset\s*=\s*\"?([^\";]+)", content_type or "", re.IGNORECASE)
    if charset is None or charset.group(1).strip().lower() in ("utf-8", "utf8"):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return "base64"
        return "text"
    return "base64"


def data_member(data: bytes | None, form: str) -> tuple[str, msgspec.Raw] | None:
    """The structured-mode member (``data`` or ``data_base64``) that carries ``data`` in ``form``."""
    if data is None or form == "none":
        return None
    if form == "json":
        return "data", msgspec.Raw(data)
    if form == "text":
        return "data", msgspec.Raw(_encoder.encode(data.decode("utf-8")))
    return "data_base64", msgspec.Raw(_encoder.encode(base64.b64encode(data).decode("ascii")))


__all__ = [
    "CONTEXT",
    "REQUIRED",
    "SPEC_VERSION",
    "DataForm",
    "Parsed",
    "SpecError",
    "binary",
    "check_attributes",
    "data_member",
    "from_members",
    "is_json",
    "media_type",
    "structured",
]
