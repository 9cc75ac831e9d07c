"""Redaction: seeded personal data and secrets never reach the model server, the stored streams
(events, dead letters, buckets) or the logs; contexts say which kinds of data they touched."""

from __future__ import annotations

import json
import logging

import pytest
from agentos_cli.goals import submit
from agentos_kernel import Bus
from agentos_kernel.llm import LLM, ModelRegistry
from agentos_kernel.redact import Redactor, kinds_in, redactor
from agentos_kernel.secrets import SecretStore
from agentos_kernel.testing import eventually, unique
from agentos_schemas.events import ContextReady, GoalCompleted, GoalFailed

from tests.e2e.conftest import goal_events
from tests.governance.conftest import Fleet

STORED_SECRET = "crm-7Hq2xZp9LwQ"
SEEDS = {
    "email": ["jane.doe@example.com"],
    "phone": ["+44 20 7946 0958", "7946 0958"],
    "card": ["4111 1111 1111 1111", "4111111111111111"],
    "iban": ["GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432"],
    "national_id": ["123-45-6789"],
    "secret": ["sk-proj-Q8wErTy5uIoPaSdFgHjKlZxCvBnM12", "Hunter2Secret!", STORED_SECRET],
}
SEEDED_TEXT = (
    "Refund the customer jane.doe@example.com (phone +44 20 7946 0958, card 4111 1111 1111 1111, "
    "IBAN GB82 WEST 1234 5698 7654 32, SSN 123-45-6789). Use api key sk-proj-Q8wErTy5uIoPaSdFgHjKlZxCvBnM12, "
    f"password=Hunter2Secret! and the CRM token {STORED_SECRET}."
)


def leaks(text: str) -> list[str]:
    return [v for values in SEEDS.values() for v in values if v in text]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe@example.com now", "mail [EMAIL] now"),
        ("call +1 415 555 0100 or (415) 555-0199", "call [PHONE] or [PHONE]"),
        ("pay 4111 1111 1111 1111, not 4111 1111 1111 1112", "pay [CARD], not 4111 1111 1111 1112"),
        ("to DE89370400440532013000", "to [IBAN]"),
        ("ssn 123-45-6789, dni 12345678Z, nino AB123456C", "ssn [NATIONAL_ID], dni [NATIONAL_ID], nino [NATIONAL_ID]"),
        ("key AKIAIOSFODNN7EXAMPLE and token: abc123def456", "key [SECRET] and token: [SECRET]"),
        ("nats://admin:s3cr3tpw@127.0.0.1:4222", "nats://admin:[SECRET]@127.0.0.1:4222"),
        (
            "id 01937712-5551-7234-8abc-0123456789ab seq 12345678901 at 2026-11-05T10:00:00Z cost 0.0012",
            "id 01937712-5551-7234-8abc-0123456789ab seq 12345678901 at 2026-11-05T10:00:00Z cost 0.0012",
        ),
    ],
)
def test_detectors(text: str, expected: str) -> None:
    assert Redactor().redact(text) == expected


def test_json_keeps_identifiers_and_reports_kinds() -> None:
    raw = json.dumps({"goal_id": "4111111111111111", "text": "mail jane.doe@example.com", "n": 5}).encode()
    out, kinds = Redactor().json_bytes(raw)
    assert json.loads(out) == {"goal_id": "4111111111111111", "text": "mail [EMAIL]", "n": 5}
    assert kinds == {"email"} and kinds_in("[EMAIL] and [SECRET]") == {"email", "secret"}


@pytest.mark.parametrize(
    "text",
    [
        "line one\n+44 20 7946 0958",
        "line two\n+14155550100",
        "tab\t123-45-6789\tend",
        'quoted "jane.doe@example.com"',
        "back\\slash 4111 1111 1111 1111",
        "caf\u00e9 \u2014 DE89370400440532013000",
        "nothing to see here",
        'aws_key = "AKIAIOSFODNN7EXAMPLE"',
        "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34\n",
    ],
)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_json_fast_path_finds_what_a_full_parse_finds(text: str, ascii_only: bool) -> None:
    """The whole-document probe that lets clean payloads skip parsing must never miss a finding
    that scanning each string would make, whatever JSON escaping the producer used."""
    r = Redactor()
    raw = json.dumps({"items": [{"text": text, "n": 1}], "note": text}, ensure_ascii=ascii_only).encode()
    expected: set[str] = set()
    walked = r.value(json.loads(raw), expected)
    out, kinds = r.json_bytes(raw)
    assert kinds == expected and json.loads(out) == walked
    if not expected:
        assert out is raw  # nothing found: the very same bytes, not re-encoded


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    from agentos_kernel.redact import install_logging

    install_logging()
    with caplog.at_level(logging.INFO, logger="agentos.test"):
        logging.getLogger("agentos.test").info(
            "customer %s paid with %s", "jane.doe@example.com", "4111 1111 1111 1111"
        )
        try:
            raise ValueError("bad password=Hunter2Secret!")
        except ValueError:
            logging.getLogger("agentos.test").exception("failed")
    assert "customer [EMAIL] paid with [CARD]" in caplog.text
    assert not leaks(caplog.text), caplog.text


async def test_seeded_data_reaches_no_prompt_event_bucket_or_log(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    SecretStore(fleet.admin.state_dir / "secrets").put("crm_token", STORED_SECRET)
    caplog.set_level(logging.DEBUG, logger="agentos")
    goal = await submit(fleet.bus, SEEDED_TEXT, tenant=unique("red"), workflow="echo-one")

    async def finished() -> bool:
        events = await goal_events(fleet.bus, goal.data.goal_id)
        return any(isinstance(e.data, GoalCompleted | GoalFailed) for e in events)

    await eventually(finished, timeout=30, every=0.2)
    events = await goal_events(fleet.bus, goal.data.goal_id)
    assert isinstance(events[-1].data, GoalCompleted), events[-1].data

    # The model server: every request it received, in full.
    prompts = [json.dumps(r["body"]) for r in fleet.model.requests]
    mine = [p for p in prompts if "Refund the customer" in p]
    assert mine and not any(leaks(p) for p in prompts)
    assert "[EMAIL]" in mine[0] and "[CARD]" in mine[0] and "[SECRET]" in mine[0]

    # The audit trail: classification tags on the agent's context.
    context = next(e.data for e in events if isinstance(e.data, ContextReady))
    assert set(context.manifest.classification) == {"email", "phone", "card", "iban", "national_id", "secret"}

    # Every stored message of every stream: events, dead letters, buckets (task snapshots), objects.
    stored = await all_stored(fleet.bus)
    assert stored > 10
    assert not leaks(caplog.text), [line for line in caplog.text.splitlines() if leaks(line)]


async def all_stored(bus: Bus) -> int:
    """Scan every message of every stream; fail on a seeded value. Returns how many were read."""
    count = 0
    for info in await bus.js.streams_info():
        name, last = info.config.name, info.state.last_seq
        for seq in range(info.state.first_seq, last + 1):
            try:
                msg = await bus.js.get_msg(name, seq)
            except Exception:
                continue
            text = (msg.data or b"").decode(errors="replace") + json.dumps(dict(msg.headers or {}))
            assert not leaks(text), f"{name} seq {seq}: {leaks(text)}"
            count += 1
    return count


async def test_llm_redacts_before_the_call(fleet: Fleet) -> None:
    """The kernel's model path redacts on its own, whatever the caller passes."""
    llm = LLM(ModelRegistry.load())
    before = len(fleet.model.requests)
    await llm.complete(["fast"], [{"role": "user", "content": SEEDED_TEXT}])
    sent = json.dumps(fleet.model.requests[before]["body"])
    assert not leaks(sent) and "[IBAN]" in sent and "[NATIONAL_ID]" in sent


def test_context_manager_redacts_and_classifies_its_output() -> None:
    from agentos_context_manager.assemble import Assembly
    from agentos_context_manager.service import classified
    from agentos_schemas.events import ContextManifest

    redactor().register(STORED_SECRET)
    assembly = Assembly(
        messages=(
            {"role": "system", "content": "You are careful."},
            {"role": "user", "content": SEEDED_TEXT + " Earlier: [PHONE]"},
        ),
        manifest=ContextManifest(charter="echo@1"),
    )
    messages, manifest = classified(assembly)
    assert not leaks(json.dumps(messages))
    assert set(manifest.classification) == {"email", "phone", "card", "iban", "national_id", "secret"}
