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
the kinds found are returned for data-classification tags. No model is downloaded.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from agentos_schemas.personal import TOKEN_PREFIX

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
_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL")

_DETECT_SECRETS = (  # (module, class) in detect_secrets.plugins
    "aws.AWSKeyDetector",
    "azure_storage_key.AzureStorageKeyDetector",
    "basic_auth.BasicAuthDetector",
    "discord.DiscordBotTokenDetector",
    "github_token.GitHubTokenDetector",
    "gitlab_token.GitLabTokenDetector",
    "jwt.JwtTokenDetector",
    "mailchimp.MailchimpDetector",
    "npm.NpmDetector",
    "openai.OpenAIDetector",
    "pypi_token.PypiTokenDetector",
    "sendgrid.SendGridDetector",
    "slack.SlackDetector",
    "square_oauth.SquareOAuthDetector",
    "stripe.StripeDetector",
    "telegram_token.TelegramBotTokenDetector",
    "twilio.TwilioKeyDetector",
)
#: Gates for plugins whose patterns need no 16-character token run (see ``_GATES``).
_PLUGIN_GATES = {"basic_auth": ":", "telegram_token": ":", "npm": ":", "jwt": "eyJ", "slack": "slack"}
_OWN_SECRETS = (
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    r"\b(?:sk|pk|rk)_(?:live|test)_[0-9a-zA-Z]{16,}",
    r"\bsk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}",
    r"\bAIza[0-9A-Za-z_-]{35}\b",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{12,})",
    r"(?i)(?:\b|_)(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|access[_-]?key|client[_-]?secret"
    r"|private[_-]?key|auth[_-]?token|credentials?)[\"']?\s*[:=]\s*[\"']?([^\s\"',;{}]{6,})",
)


@dataclass(frozen=True)
class Detector:
    """One kind of finding: a candidate pattern, the group to replace, and a validator."""

    kind: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    group: int = 0
    gate: str = ""
    """A cheap precondition on the whole text (see ``_GATES``); the pattern runs only if it holds."""


_KEYWORDS = ("pass", "pwd", "secret", "token", "key", "credential", "bearer")


def _has_keyword(lowered: str) -> bool:
    return any(k in lowered for k in _KEYWORDS)


_GATES: dict[str, Callable[[str], bool]] = {
    "": lambda text: True,
    "@": lambda text: "@" in text,
    ":": lambda text: ":" in text,
    "digits": re.compile(r"\d[\d ().-]{5,}\d").search,  # type: ignore[dict-item]
    "upper": re.compile(r"[A-Z]{2} ?\d{2}").search,  # type: ignore[dict-item]  # IBAN, NINO, codice fiscale
    # Every key-shaped secret has a run of at least 16 token characters; prose has none, so most
    # text skips the ~20 secret patterns after one cheap scan.
    "token": re.compile(r"[A-Za-z0-9_+/=-]{16}").search,  # type: ignore[dict-item]
    "eyJ": lambda text: "eyJ" in text,
    "slack": lambda text: "xox" in text.lower() or "hooks.slack.com" in text.lower(),
    "pkey": lambda text: "PRIVATE KEY" in text,
    "kw": lambda text: _has_keyword(text.lower()),
}


def _card(text: str) -> bool:
    from stdnum import luhn

    digits = "".join(c for c in text if c.isdigit())
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _phone(text: str) -> bool:
    import phonenumbers  # its metadata costs ~30 ms to import: paid on the first phone-like text

    regions = (None,) if text.startswith("+") else _PHONE_REGIONS
    for region in regions:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


def _any_valid(*modules: Any) -> Callable[[str], bool]:
    return lambda text: any(m.is_valid(text) for m in modules)


def _secret_detectors() -> list[Detector]:
    found = []
    for module, name in (entry.split(".") for entry in _DETECT_SECRETS):
        plugin = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), name)()
        for pattern in plugin.denylist:
            found.append(
                Detector(
                    "secret", pattern, group=1 if module == "basic_auth" else 0, gate=_PLUGIN_GATES.get(module, "token")
                )
            )
    for text in _OWN_SECRETS:
        pattern = re.compile(text)
        gate = (
            "kw"
            if "bearer" in text or "pwd" in text
            else "pkey"
            if "PRIVATE KEY" in text
            else "slack"
            if "xox" in text
            else "token"
        )
        found.append(Detector("secret", pattern, group=1 if pattern.groups else 0, gate=gate))
    return found


def default_detectors() -> list[Detector]:
    """Secrets first (they win overlaps), then bank, card and id numbers, then e-mail and phone."""
    from stdnum import iban
    from stdnum.br import cpf
    from stdnum.es import dni, nie
    from stdnum.fr import nir
    from stdnum.it import codicefiscale
    from stdnum.us import ssn

    nino = r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
    return [
        *_secret_detectors(),
        Detector(
            "iban",
            re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
            iban.is_valid,
            gate="upper",
        ),
        Detector(
            "card", re.compile(r"(?<![\d.])[2-6]\d{3}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?![\d.])"), _card, gate="digits"
        ),
        Detector("card", re.compile(r"(?<![\d.])3[47]\d{2}[ -]?\d{6}[ -]?\d{5}(?![\d.])"), _card, gate="digits"),
        Detector("national_id", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), ssn.is_valid, gate="digits"),
        Detector("national_id", re.compile(r"\b[XYZ]?\d{7,8}-?[A-Z]\b"), _any_valid(dni, nie), gate="digits"),
        Detector(
            "national_id",
            re.compile(r"\b[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]\b"),
            codicefiscale.is_valid,
            gate="upper",
        ),
        Detector(
            "national_id",
            re.compile(r"(?<!\d)[12] ?\d{2} ?\d{2} ?\d{2} ?\d{3} ?\d{3} ?\d{2}(?!\d)"),
            nir.is_valid,
            gate="digits",
        ),
        Detector("national_id", re.compile(r"(?<![\d.])\d{3}\.\d{3}\.\d{3}-\d{2}(?!\d)"), cpf.is_valid, gate="digits"),
        Detector("national_id", re.compile(nino), gate="upper"),
        Detector(
            "email",
            re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            gate="@",
        ),
        Detector(
            "phone", re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?![\w])"), _phone, gate="digits"
        ),
        Detector(
            "phone", re.compile(r"(?<![\w.-])\(?\d{2,5}\)?[ .-]\d{3,4}[ .-]?\d{3,4}(?![\w-])"), _phone, gate="digits"
        ),
    ]


class Redactor:
    """Finds and replaces personal data and secrets in text and in JSON-like values."""

    def __init__(self, detectors: Iterable[Detector] | None = None) -> None:
        self.detectors = list(detectors) if detectors is not None else default_detectors()
        self._values: set[str] = set()
        self._values_re: re.Pattern[str] | None = None
        self.scan = functools.lru_cache(maxsize=4096)(self._scan)

    def register(self, *values: str) -> None:
        """Treat these exact strings as secrets from now on (values shorter than 6 are ignored)."""
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
                gates[d.gate] = bool(_GATES[d.gate](text))
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

    def value(self, value: Any, kinds: set[str] | None = None, key: str = "") -> Any:
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
        stack: list[tuple[Any, str]] = [(doc, "")]
        while stack:
            value, key = stack.pop()
            kind = type(value)
            if kind is str:
                if (
                    len(value) >= 6
                    and key not in SKIP_KEYS
                    and not key.endswith(_ID_KEYS)
                    and not value.startswith(TOKEN_PREFIX)
                    and scan(value)[1]
                ):
                    return True
            elif kind is dict:
                stack.extend((v, k) for k, v in value.items())
            elif kind is list:
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


_DEFAULT: Redactor | None = None


def redactor() -> Redactor:
    """The process-wide redactor (built on first use, knowing the default secret store's values)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Redactor()
        from agentos_kernel.secrets import SecretStore

        SecretStore.default().register_all()
    return _DEFAULT


def redact(text: str) -> str:
    """``text`` redacted by the process-wide redactor."""
    return redactor().redact(text)


class RedactingFilter(logging.Filter):
    """Rewrites each log record's message (and exception text) with findings redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops it."""
        return bool(redact_record(record))


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: the formatted message, and the traceback text if any."""
    if getattr(record, "_agentos_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: keep the record as logging would
        return record
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    record._agentos_redacted = True  # type: ignore[attr-defined]
    return record


def install_logging() -> None:
    """Redact every log record this process creates, whichever logger or handler it goes to."""
    if getattr(logging.getLogRecordFactory(), "agentos_redacting", False):
        return
    redactor()  # built before the factory is in place, so building it logs nothing through it
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    factory.agentos_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
