"""The classifier's fast paths (ASCII marks scan, cheap pre-checks before the phone and card regexes,
one placeholder scan) give exactly the tags of the plain definition, which is written out here.

A change of tags would make a rebuild differ from projections written before it, so this compares the
two on many generated payloads rich in what the rules look at: digit runs with separators, ``+``,
``@``, placeholders, declared field names, non-ASCII digits and letters.
"""

from __future__ import annotations

import random

import pytest
from agentos_audit import classify as c
from agentos_schemas.personal import TOKEN_PREFIX


def reference(text: str) -> list[str]:
    """The classifier as first written: every candidate span through both regexes, substring checks."""
    tags: set[str] = set()
    for m in c._CANDIDATE.finditer(text):
        if len(m.group().translate(c._SEPARATORS)) < 8:
            continue
        span = text[max(0, m.start() - 3) : m.end() + 1]
        if "pii:phone" not in tags and c._has_phone(span):
            tags.add("pii:phone")
        if "pii:card" not in tags and c._has_card(span):
            tags.add("pii:card")
    if c._has_email(text):
        tags.add("pii:email")
    lower = text.lower()
    words = ("email", "phone", "ssn", "birth", "passport")
    labels = ("classification", "sensitivity", "labels", "tags")
    if (any(w in lower for w in words) and c._DECLARED_FIELD.search(text)) or (
        ("pii" in lower or "personal" in lower) and any(w in lower for w in labels) and c._DECLARED_LABEL.search(text)
    ):
        tags.add("pii:declared")
    if any(p in text for p in ("[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[NATIONAL_ID]", "[SECRET]")):
        found = {c._PLACEHOLDER_TAG[m] for m in c._PLACEHOLDER.findall(text)}
        if found:
            tags |= found | {"redacted"}
    if TOKEN_PREFIX in text:
        tags.add("pii:encrypted")
    if any(t.startswith("pii:") for t in tags):
        tags.add(c.PERSONAL)
    return sorted(tags)


PIECES = [
    "0",
    "1",
    "4",
    "5",
    "7",
    "9",
    "12",
    "415",
    "555",
    "0100",
    "4111",
    "1111",
    "7946",
    "0958",
    "20",
    "44",
    "4111111111111111",
    "378282246310005",
    "4222 2222 2222 2",
    "4222-2222-2222-2",
    "2026-11-24",
    "g00000001",
    "+",
    "+44 ",
    "(",
    ")",
    " ",
    "-",
    ".",
    "--",
    "  ",
    "@",
    "jane.doe@example.com",
    "x@1",
    "a",
    "Z",
    "_",
    '"',
    ":",
    ",",
    "{",
    "}",
    "[",
    "]",
    "[EMAIL]",
    "[PHONE]",
    "[CARD]",
    "[IBAN]",
    "[NATIONAL_ID]",
    "[SECRET]",
    "[EMAIL",
    '"phone": "',
    '"requester_email": "x"',
    '"tags": ["pii"]',
    '"labels": "personal"',
    '"ssn":""',
    "birth",
    "passport",
    TOKEN_PREFIX,
    "é",
    "ü",
    "٣",
    "٤٥٦٧٨٩٠١",
    "१२३",
    "\u00a0",
    "\\u0000",
    "lorem ipsum ",
]


@pytest.mark.parametrize("seed", range(4))
def test_fast_classifier_equals_the_plain_definition(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(5000):
        text = "".join(rnd.choice(PIECES) for _ in range(rnd.randrange(1, 40)))
        assert c.classify(text) == reference(text), text


def test_known_shapes() -> None:
    cases = {
        '{"goal_id": "g00000001", "attempt": 1, "time": "2026-11-24T06:06:28Z"}': [],
        '{"text": "call +44 20 7946 0958"}': ["personal_data", "pii:phone"],
        '{"text": "call (415) 555-0100 now"}': ["personal_data", "pii:phone"],
        '{"n": "4111111111111111"}': ["personal_data", "pii:card"],
        '{"n": "4111-1111-1111-1111", "at": "jo@example.com"}': ["personal_data", "pii:card", "pii:email"],
        '{"n": "4111111111111112"}': [],  # not Luhn-valid
        '{"text": "٤١٥ ٥٥٥ ٠١٠٠"}': reference('{"text": "٤١٥ ٥٥٥ ٠١٠٠"}'),  # noqa: RUF001  (Arabic-Indic digits, on purpose)
        '{"text": "[IBAN] and [NATIONAL_ID]"}': ["personal_data", "pii:iban", "pii:national_id", "redacted"],
    }
    for text, tags in cases.items():
        assert c.classify(text) == tags == reference(text), text
