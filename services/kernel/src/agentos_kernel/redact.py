"""Redaction of personal data and secrets before they reach a model prompt, an event or a log line.

Detectors find candidate spans with patterns and confirm them with maintained validators:

* ``email``;
* ``phone`` — an international (``+CC …``) or formatted national number, confirmed by
  ``phonenumbers`` (Google's libphonenumber metadata); bare digit runs are not phones, so ids and
  counters are left alone;
* ``card`` — 13–19 digits starting 2–6 (grouped or not) with a valid Luhn check (``python-stdnum``);
* ``iban`` — confirmed by ``stdnum.iban`` (country length and mod-97 check);
* ``national_id`` — US SSN, Spanish DNI/NIE, Italian codice fiscale, French NIR, Brazilian CPF
  (each confirmed by its ``stdnum`` validator), UK National Insurance numbers (format rules);
* ``secret`` — the token formats of ``detect-secrets`` (AWS, GitHub, GitLab, Slack, Stripe,
  OpenAI, JWT, private keys, credentials in URLs …), bearer tokens, ``password=…``/``api_key: …``
  style assignments, common provider key prefixes, and every value registered with
  :meth:`Redactor.register` (the secret store registers the values it holds).

Findings become ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[NATIONAL_ID]`` or ``[SECRET]``;
the kinds found are returned for data-classification tags. No model is downloaded. The detectors
themselves are in :mod:`agentos_kernel.detectors`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from agentos_schemas.personal import TOKEN_PREFIX

from agentos_kernel.detectors import GATES, Detector, default_detectors
from agentos_kernel.faults import FAULTS

KINDS = ("secret", "iban", "card", "national_id", "email", "phone")
TOKENS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "iban": "[IBAN]",
    "national_id": "[NATIONAL_ID]",
    "secret": "[SECRET]",
}
_PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CARD|IBAN|NATIONAL_ID|SECRET)\]")
#: JSON keys whose values are identifiers or structure, never free text: left as they are.
SKIP_KEYS = frozenset({"id", "charter", "output_schema", "schema", "parameters", "dataschema", "type"})
_ID_KEYS = ("_id", "_ids")
JsonLike = dict[Any, Any] | list[Any] | tuple[Any, ...] | str | int | float | bool | None
"""A JSON-like value, as :meth:`Redactor.value` walks it (its containers' items are any of these)."""


class Redactor:
    """Finds and replaces personal data and secrets in text and in JSON-like values."""

    def __init__(self, detectors: Iterable[Detector] | None = None) -> None:
        self.detectors = list(detectors) if detectors is not None else default_detectors()
        self._values: set[str] = set()
        self._values_re: re.Pattern[str] | None = None
        self.scan = functools.lru_cache(maxsize=4096)(self._scan)

    def register(self, *values: object) -> None:
        """Treat these exact strings as secrets from now on (non-strings, and strings shorter than 6
        once stripped, are ignored)."""
        new = {v for v in values if isinstance(v, str) and len(v.strip()) >= 6} - self._values
        if not new:
            return
        self._values |= new
        ordered = sorted(self._values, key=len, reverse=True)
        self._values_re = re.compile("|".join(re.escape(v) for v in ordered))
        self.scan.cache_clear()

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        spans: list[tuple[int, int, str]] = []
        if self._values_re is not None:
            spans += [(m.start(), m.end(), "secret") for m in self._values_re.finditer(text)]
        gates: dict[str, bool] = {}
        for d in self.detectors:
            if d.gate not in gates:
                gates[d.gate] = bool(GATES[d.gate](text))
            if not gates[d.gate]:
                continue
            for m in d.pattern.finditer(text):
                start, end = m.span(d.group)
                if start < 0 or end <= start or (d.valid is not None and not d.valid(m.group(d.group))):
                    continue
                if all(end <= s or start >= e for s, e, _ in spans):
                    spans.append((start, end, d.kind))
        return spans

    def _scan(self, text: str) -> tuple[str, frozenset[str]]:
        if len(text) < 6:
            return text, frozenset()
        spans = self._spans(text)
        if not spans:
            return text, frozenset()
        out = text
        for start, end, kind in sorted(spans, reverse=True):
            out = out[:start] + TOKENS[kind] + out[end:]
        return out, frozenset(kind for _, _, kind in spans)

    def redact(self, text: str) -> str:
        """``text`` with every finding replaced by its token."""
        return self.scan(text)[0]

    def value(self, value: JsonLike, kinds: set[str] | None = None, key: str = "") -> Any:
        """A JSON-like value with every string redacted (identifier keys such as ``*_id`` kept);
        the kinds found are added to ``kinds``."""
        if isinstance(value, str):
            if key in SKIP_KEYS or key.endswith(_ID_KEYS) or value.startswith(TOKEN_PREFIX):
                return value  # identifiers, and sealed personal fields (ciphertext)
            out, found = self.scan(value)
            if kinds is not None:
                kinds.update(found)
            return out
        if isinstance(value, dict):
            return {k: self.value(v, kinds, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v, kinds, key) for v in value]
        return value

    def _finds_any(self, doc: Any) -> bool:
        """Whether any string of a decoded JSON document holds a finding (the cheap check that
        lets the common clean document through without being rebuilt)."""
        scan = self.scan
        stack: list[tuple[JsonLike, str]] = [(doc, "")]
        while stack:
            value, key = stack.pop()
            if type(value) is str:
                if (
                    len(value) >= 6
                    and key not in SKIP_KEYS
                    and not key.endswith(_ID_KEYS)
                    and not value.startswith(TOKEN_PREFIX)
                    and scan(value)[1]
                ):
                    return True
            elif type(value) is dict:
                stack.extend((v, k) for k, v in value.items())
            elif type(value) is list:
                stack.extend((v, key) for v in value)
        return False

    def json_bytes(self, raw: bytes) -> tuple[bytes, frozenset[str]]:
        """Redacted JSON bytes (the same bytes when nothing was found) and the kinds found."""
        doc = msgspec.json.decode(raw)
        if not self._finds_any(doc):
            return raw, frozenset()
        kinds: set[str] = set()
        out = self.value(doc, kinds)
        if not kinds:
            return raw, frozenset()
        return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode(), frozenset(kinds)

    def messages(self, messages: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], frozenset[str]]:
        """Chat messages with their text content (and tool-call arguments) redacted."""
        kinds: set[str] = set()
        out = [
            {k: (self.value(v, kinds, "content") if k in ("content", "tool_calls") else v) for k, v in m.items()}
            for m in messages
        ]
        return out, frozenset(kinds)


def kinds_in(text: str) -> frozenset[str]:
    """The kinds whose tokens appear in already-redacted text."""
    return frozenset(m.group(1).lower() for m in _PLACEHOLDER.finditer(text))


_default: Redactor | None = None


def redactor() -> Redactor:
    """The process-wide redactor (built on first use, knowing the default secret store's values)."""
    global _default
    if _default is None:
        _default = Redactor()
        from agentos_kernel.secrets import SecretStore

        SecretStore.default().register_all()
    return _default


def redact(text: str) -> str:
    """``text`` redacted by the process-wide redactor."""
    return redactor().redact(text)


def redact_payload(raw: bytes, form: str = "json") -> bytes:
    """An event's data bytes redacted in their form: JSON as JSON, text as text (the same bytes
    when nothing is found); binary data (``base64``) cannot be read, and is kept as sent."""
    if form == "json":
        return redactor().json_bytes(raw)[0]
    if form == "text":
        text = raw.decode("utf-8")
        cleaned = redactor().redact(text)
        return raw if cleaned == text else cleaned.encode("utf-8")
    return raw


class RedactingFilter(logging.Filter):
    """Rewrites each log record's message (and exception text) with findings redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops it."""
        return bool(redact_record(record))


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: the formatted message, and the traceback text if any."""
    if getattr(record, "_agentos_redacted", False) or getattr(record, "_agentos_unformatted", False):
        return record
    try:
        message = record.getMessage()
    except Exception as exc:  # noqa: BLE001  (boundary: a log call's broken format or argument must not break logging)
        # Kept as logging would keep it (its handler reports the error when it formats the record);
        # noted once: the handlers' filter sees the same record again.
        record._agentos_unformatted = True
        FAULTS.note(f"redact a log record of {record.name} (its message does not format: kept as it is)", exc)
        return record
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    record._agentos_redacted = True
    return record


def install_logging() -> None:
    """Redact every log record this process creates, whichever logger or handler it goes to."""
    if getattr(logging.getLogRecordFactory(), "agentos_redacting", False):
        return
    redactor()  # built before the factory is in place, so building it logs nothing through it
    logging.setLogRecordFactory(_RedactingFactory(logging.getLogRecordFactory()))
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


class _RedactingFactory:
    """A log record factory that redacts each record the ``previous`` one makes."""

    agentos_redacting = True
    """What :func:`install_logging` looks for: the factory in place already redacts."""

    def __init__(self, previous: Callable[..., logging.LogRecord]) -> None:
        self.previous = previous

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(self.previous(*args, **kwargs))
