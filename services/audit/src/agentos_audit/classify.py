"""Data classification of an event payload: which kinds of personal data it carries.

A pure function of the payload's JSON text, so the projection, a rebuild and ``verify`` all
derive the same tags. Tags:

- ``pii:email`` — an e-mail address appears in a value;
- ``pii:phone`` — a phone number (international ``+CC …`` with 8–15 digits, or the
  North-American ``(555) 123-4567`` / ``555-123-4567`` shapes);
- ``pii:card`` — a Luhn-valid payment-card number (grouped ``4111 1111 1111 1111`` or a
  contiguous 15–16 digit run starting 3–6);
- ``pii:declared`` — the payload says so itself: a non-empty string field whose name contains
  ``email``, ``phone``, ``ssn``, ``birth`` or ``passport``, or a ``classification`` /
  ``data_classification`` / ``sensitivity`` / ``labels`` / ``tags`` field mentioning
  ``personal`` or ``pii``;
- ``pii:iban``, ``pii:national_id`` — only from redaction placeholders (below);
- ``redacted`` — the publisher's redaction (``agentos_kernel.redact``) replaced something: each
  placeholder ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[NATIONAL_ID]`` also yields its
  ``pii:*`` tag (personal data was there, even though the log no longer holds it), and
  ``[SECRET]`` yields ``secret``;
- ``pii:encrypted`` — a personal field sealed with its data subject's key (crypto-shredding,
  ``agentos_kernel.shred``): a name or a message the catalogue marks personal;
- ``personal_data`` — any ``pii:*`` tag.

It is a heuristic for finding events worth an auditor's look, not a guarantee: names, postal
addresses and free-text identifiers are not detected.
"""

from __future__ import annotations

import re

from agentos_schemas.personal import TOKEN_PREFIX

PERSONAL = "personal_data"

_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_INTL_PHONE = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){2,5}(?![\w.])")
_NANP_PHONE = re.compile(r"(?<![\w\-.])\(?\d{3}\)?[ .\-]\d{3}[ .\-]\d{4}(?![\w\-])")
_GROUPED_CARD = re.compile(r"(?<![\d\-])\d{4}([ \-])\d{4}\1\d{4}\1\d{1,7}(?![\d\-])")
_PLAIN_CARD = re.compile(r"(?<![\d.])[3-6]\d{14,15}(?![\d.])")
_DECLARED_FIELD = re.compile(
    r'"[A-Za-z0-9_]*(?:email|phone|ssn|birth|passport)[A-Za-z0-9_]*"\s*:\s*"[^"]', re.IGNORECASE
)
_DECLARED_LABEL = re.compile(
    r'"(?:classification|data_classification|sensitivity|labels|tags)"\s*:\s*'
    r'(?:"[^"]*(?:personal|pii)[^"]*"|\[[^\]]*(?:personal|pii)[^\]]*\])',
    re.IGNORECASE,
)


#: Digit runs with phone/card separators: only these spans are checked for phones and cards.
_CANDIDATE = re.compile(r"\d[\d \-().]{6,}\d")
#: The same over ASCII text mapped to one mark per character (digit ``d``, separator ``s``, other
#: ``x``; on ASCII ``\d`` is ``[0-9]``): the regex engine then skips to each ``d`` at memchr speed.
_MARKS = bytes(ord("d") if 48 <= i <= 57 else ord("s") if chr(i) in " -()." else ord("x") for i in range(256))
_CANDIDATE_MARKS = re.compile(rb"d[ds]{6,}d")
_SEPARATORS = str.maketrans("", "", " -().")
_PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CARD|IBAN|NATIONAL_ID|SECRET)\]")
_PLACEHOLDER_TAG = {
    "EMAIL": "pii:email",
    "PHONE": "pii:phone",
    "CARD": "pii:card",
    "IBAN": "pii:iban",
    "NATIONAL_ID": "pii:national_id",
    "SECRET": "secret",
}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by payment-card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _has_phone(text: str) -> bool:
    for m in _INTL_PHONE.finditer(text):
        if 8 <= sum(c.isdigit() for c in m.group()) <= 15:
            return True
    return _NANP_PHONE.search(text) is not None


def _has_card(text: str) -> bool:
    for pattern in (_GROUPED_CARD, _PLAIN_CARD):
        for m in pattern.finditer(text):
            digits = "".join(c for c in m.group() if c.isdigit())
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                return True
    return False


def _has_email(text: str) -> bool:
    """An ``local@domain.tld`` around any ``@`` (checked in place: ``name@1`` charters are not e-mails)."""
    at = text.find("@")
    while at != -1:
        if at > 0 and text[at - 1] in _EMAIL_LOCAL and _EMAIL_DOMAIN.match(text, at + 1):
            return True
        at = text.find("@", at + 1)
    return False


def _numbers(text: str) -> set[str]:
    found: set[str] = set()
    if text.isascii():
        candidates = _CANDIDATE_MARKS.finditer(text.encode("ascii").translate(_MARKS))
    else:
        candidates = _CANDIDATE.finditer(text)
    for m in candidates:
        start, end = m.span()
        digits = len(text[start:end].translate(_SEPARATORS))  # a candidate holds digits and separators only
        if digits < 8:  # phones have 8+ digits, cards 13+
            continue
        span = text[max(0, start - 3) : end + 1]  # a leading "+(" and the look-arounds' characters
        # Cheap necessary conditions first (most candidates are ids and dates): an international
        # phone has a "+", a North-American one two separators; a card's digits all lie in the
        # candidate (its digit run cannot reach into the three characters before it).
        if "pii:phone" not in found and ("+" in span or _separator_count(span) >= 2) and _has_phone(span):
            found.add("pii:phone")
        if "pii:card" not in found and digits >= 13 and _has_card(span):
            found.add("pii:card")
    return found


def _separator_count(span: str) -> int:
    return span.count(" ") + span.count("-") + span.count(".")


def _declared(text: str) -> bool:
    lower = text.lower()
    if (
        "email" in lower or "phone" in lower or "ssn" in lower or "birth" in lower or "passport" in lower
    ) and _DECLARED_FIELD.search(text):
        return True
    return (
        ("pii" in lower or "personal" in lower)
        and ("classification" in lower or "sensitivity" in lower or "labels" in lower or "tags" in lower)
        and _DECLARED_LABEL.search(text) is not None
    )


def classify(payload_json: str) -> list[str]:
    """The classification tags of one payload (its JSON text), sorted."""
    tags = _numbers(payload_json)
    if _has_email(payload_json):
        tags.add("pii:email")
    if _declared(payload_json):
        tags.add("pii:declared")
    placeholders = _PLACEHOLDER.findall(payload_json)
    if placeholders:
        tags |= {_PLACEHOLDER_TAG[m] for m in placeholders}
        tags.add("redacted")
    if TOKEN_PREFIX in payload_json:
        tags.add("pii:encrypted")
    if any(t.startswith("pii:") for t in tags):
        tags.add(PERSONAL)
    return sorted(tags)


__all__ = ["PERSONAL", "classify", "luhn_ok"]
