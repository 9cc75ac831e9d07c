"""Redaction before every store, not only before prompts and events.

The bus redacts (and seals) event payloads on publish. Everything else a process stores goes
through one of three doors, and each door redacts here, so no call site has to remember:

* **Key-value buckets** — every ``$KV.<bucket>.<key>`` put through a :class:`Bus`'s JetStream
  context (:class:`RedactingJetStream`): task snapshots (``AGENTOS_CONTEXTS``), business records,
  the gateway's idempotency, webhook and goal buckets, kill-switch reasons, health reports. Values
  that are not UTF-8 text are left alone, and so is the bucket of data-subject keys.
* **Dead letters** — every publish to ``dlq.>`` through :meth:`Bus.publish_raw`
  (:func:`dead_letter_copy`): the stored body is a redacted copy and every header value is
  redacted. A consumer's dead letter is a copy of a message of the event log, which keeps the
  original (``AgentOS-DLQ-Stream-Seq``). A rejected input that never entered the log (the
  gateway's, sequence ``0``) keeps its original bytes, when redaction changed anything, only
  sealed, in the header ``AgentOS-DLQ-Raw``, under the key of a data subject that ``agentos
  audit erase`` shreds: the event's data subject when the body names one, else the dead letter
  itself (``dead-letter:<Nats-Msg-Id>``); ``AgentOS-DLQ-Data-Subject`` and ``AgentOS-DLQ-Tenant``
  say which.
* **Postgres** — every ``json``/``jsonb`` parameter sent over a pool from
  :func:`agentos_kernel.db.create_pool` (:func:`install_codecs`); free-text columns that are not
  JSON are redacted where they are written (:func:`text`).

Claim-check objects are not touched here: the bus stores them already redacted and sealed, and
their names are their hashes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import msgspec
from agentos_schemas.personal import ERASED, is_token, parse_token
from nats.js.client import JetStreamContext

from agentos_kernel import shred
from agentos_kernel.redact import redactor

DLQ_PREFIX = "dlq."
RAW_HEADER = "AgentOS-DLQ-Raw"
"""The original bytes of a dead letter, sealed (present only when the stored copy was redacted)."""
SUBJECT_HEADER = "AgentOS-DLQ-Data-Subject"
"""Whose key seals ``AgentOS-DLQ-Raw``: what ``agentos audit erase`` takes to shred it."""
TENANT_HEADER = "AgentOS-DLQ-Tenant"
REDACTED_HEADER = "AgentOS-DLQ-Redacted"
"""The kinds of data the stored copy had redacted (``email,national_id`` …)."""
_OWN = frozenset({RAW_HEADER, SUBJECT_HEADER, TENANT_HEADER, REDACTED_HEADER, "Nats-Msg-Id"})
_SEAL_AS = ("dead-letter", "raw")
_EXEMPT_BUCKETS = (f"$KV.{shred.KEYS_BUCKET}.",)


def text(value: str | None) -> str | None:
    """Free text redacted for storing (None stays None)."""
    return value if value is None else redactor().redact(value)


def redact_bytes(raw: bytes) -> tuple[bytes, frozenset[str]]:
    """A redacted copy of stored bytes: JSON redacted value by value (identifier keys kept), other
    text as text, bytes that are not UTF-8 as their text with undecodable bytes replaced."""
    try:
        return redactor().json_bytes(raw)
    except (msgspec.DecodeError, ValueError, TypeError):
        pass
    decoded = raw.decode("utf-8", errors="replace")
    out, kinds = redactor().scan(decoded)
    if not kinds and decoded.encode() == raw:
        return raw, frozenset()
    return out.encode(), kinds


# -- key-value buckets -------------------------------------------------------------------------
class RedactingJetStream(JetStreamContext):
    """A JetStream context whose key-value puts are redacted (see the module doc)."""

    redact_kv = True

    async def publish(self, subject: str, payload: bytes = b"", *args: Any, **kwargs: Any) -> Any:
        if self.redact_kv and payload and subject.startswith("$KV.") and not subject.startswith(_EXEMPT_BUCKETS):
            payload = kv_value(payload)
        return await super().publish(subject, payload, *args, **kwargs)


def kv_value(raw: bytes) -> bytes:
    """A key-value value as it may be stored: redacted when it is text, as it is otherwise."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return redact_bytes(raw)[0]


# -- dead letters ------------------------------------------------------------------------------
SEALED = "[SEALED]"
"""What a personal field of a typed dead letter reads as in the stored copy (its original is sealed)."""


def _typed(raw: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], Any] | None:
    """(document, payload, personal plan) of a dead letter that is an event of a type with
    personal fields; None otherwise."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    type_ = headers.get("ce-type") or doc.get("type")
    plan = shred.plan_for(type_) if isinstance(type_, str) else None
    data = doc.get("data") if "specversion" in doc else doc
    return (doc, data, plan) if plan is not None and isinstance(data, dict) else None


def _without_personal(copy: bytes, typed: Any) -> bytes:
    """The redacted copy with the personal fields the catalogue marks replaced by ``[SEALED]``."""
    _doc, data, plan = typed
    fields = [f for f in plan.fields if isinstance(data.get(f), str) and data[f] and not is_token(data[f])]
    if not fields:
        return copy
    kept = json.loads(copy)
    target = kept.get("data") if "specversion" in kept else kept
    for field in fields:
        target[field] = SEALED
    return json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode()


def _data_subject(typed: Any) -> str | None:
    if typed is None or not typed[2].subject_field:
        return None
    value = typed[1].get(typed[2].subject_field)
    return value if isinstance(value, str) and value and not is_token(value) else None


async def dead_letter_copy(
    keys: shred.SubjectKeys, raw: bytes, headers: dict[str, str], *, tenant: str
) -> tuple[bytes, dict[str, str]]:
    """What a dead letter stores: the redacted copy (personal fields of a typed event as
    ``[SEALED]``), redacted headers, and — when the copy differs and the log does not keep the
    original — the original bytes sealed with a data subject's key."""
    copy, kinds = redact_bytes(raw)
    typed = _typed(raw, headers)
    if typed is not None:
        copy = _without_personal(copy, typed)
    kept = {k: (v if k in _OWN else redactor().redact(v)) for k, v in headers.items()}
    if kinds:
        kept[REDACTED_HEADER] = ",".join(sorted(kinds))
    if copy == raw or headers.get("AgentOS-DLQ-Stream-Seq", "0") != "0":
        return copy, kept  # nothing to keep sealed, or the log keeps the original
    tenant = headers.get(TENANT_HEADER) or tenant
    subject = (
        headers.get(SUBJECT_HEADER)
        or _data_subject(typed)
        or f"dead-letter:{headers.get('Nats-Msg-Id') or hashlib.sha256(raw).hexdigest()[:32]}"
    )
    name = shred.key_name(tenant, subject)
    revision, aead = await keys.for_sealing(name)
    blob = base64.b64encode(raw).decode()
    kept.update(
        {
            RAW_HEADER: shred.seal_value(blob, name, revision, aead, *_SEAL_AS),
            SUBJECT_HEADER: subject,
            TENANT_HEADER: tenant,
        }
    )
    return copy, kept


async def open_dead_letter(keys: shred.SubjectKeys, headers: dict[str, str]) -> bytes | None:
    """The original bytes of a dead letter; None when it kept none (nothing was redacted) or its
    key was erased. Raises BusUnavailable when the key store does not answer."""
    sealed = headers.get(RAW_HEADER)
    parsed = parse_token(sealed) if sealed else None
    if parsed is None:
        return None
    opened = shred.open_value(sealed or "", await keys.current(parsed[0]), *_SEAL_AS)
    return None if opened == ERASED else base64.b64decode(opened)


# -- Postgres ----------------------------------------------------------------------------------
def _json_param(value: Any) -> str:
    raw = (
        value.encode() if isinstance(value, str) else value if isinstance(value, bytes) else json.dumps(value).encode()
    )
    try:
        return redactor().json_bytes(raw)[0].decode()
    except (msgspec.DecodeError, ValueError):
        return raw.decode()  # not JSON: Postgres refuses it with its own error


def _jsonb_param(value: Any) -> bytes:
    return b"\x01" + _json_param(value).encode()  # jsonb's binary format: version 1, then the text


def _jsonb_result(data: bytes) -> str:
    return data[1:].decode()


async def install_codecs(conn: Any) -> None:
    """Redact every ``json``/``jsonb`` parameter this connection sends (results stay text). The
    codecs use the binary format, so binary COPY (the projectors' bulk writes) keeps working."""
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=lambda v: _json_param(v).encode(), decoder=bytes.decode, format="binary"
    )
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_jsonb_param, decoder=_jsonb_result, format="binary"
    )


def header_value(text: str, limit: int = 900) -> str:
    """``text`` as a NATS header value: on one line (headers end at a line break), at most ``limit``
    characters (cut with an ellipsis)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
