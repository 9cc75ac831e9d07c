"""The detectors the redactor runs (:mod:`agentos_kernel.redact` describes what each finds).

A detector is a candidate pattern, a cheap gate on the whole text that decides whether the
pattern runs at all, and a maintained validator that confirms each candidate. The validators'
libraries (``stdnum``, ``phonenumbers``, ``detect-secrets``) are imported when the detectors are
built or first used, not when this module is.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
#: Gates for plugins whose patterns need no 16-character token run (see ``GATES``).
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
    """A cheap precondition on the whole text (see ``GATES``); the pattern runs only if it holds."""


_KEYWORDS = ("pass", "pwd", "secret", "token", "key", "credential", "bearer")


def _has_keyword(lowered: str) -> bool:
    return any(k in lowered for k in _KEYWORDS)


#: Gate name -> the precondition it checks on the whole text (truthy when it holds: a bool, or a
#: regex search's match).
GATES: dict[str, Callable[[str], object]] = {
    "": lambda text: True,
    "@": lambda text: "@" in text,
    ":": lambda text: ":" in text,
    "digits": re.compile(r"\d[\d ().-]{5,}\d").search,
    "upper": re.compile(r"[A-Z]{2} ?\d{2}").search,  # IBAN, NINO, codice fiscale
    # Every key-shaped secret has a run of at least 16 token characters; prose has none, so most
    # text skips the ~20 secret patterns after one cheap scan.
    "token": re.compile(r"[A-Za-z0-9_+/=-]{16}").search,
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
    return [*_secret_detectors(), *_bank_and_card_detectors(), *_national_id_detectors(), *_contact_detectors()]


def _bank_and_card_detectors() -> list[Detector]:
    from stdnum import iban

    return [
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
    ]


def _national_id_detectors() -> list[Detector]:
    from stdnum.br import cpf
    from stdnum.es import dni, nie
    from stdnum.fr import nir
    from stdnum.it import codicefiscale
    from stdnum.us import ssn

    nino = r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
    return [
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
    ]


def _contact_detectors() -> list[Detector]:
    return [
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
