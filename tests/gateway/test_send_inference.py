"""`agentos send FILE` without `--source`: the gateway says which mapping matches the payload, the
CLI says which one it used; no match, or more than one, is an error naming the candidates. The
real CLI, against a real gateway on the session's JetStream."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from agentos_gateway.mapping import SHIPPED_DIR
from agentos_schemas import new_event_id

from tests.gateway.conftest import Running, key_for, stored
from tests.gateway.test_client_cli import _agentos

EXAMPLES = Path(__file__).resolve().parents[2] / "services" / "gateway" / "examples"
#: What each sample must be recognised as: (source, rule, an event type it publishes).
EXPECTED = {
    "zendesk-ticket-created.json": ("zendesk", "ticket-created", "dev.agentos.goal.submitted.v1"),
    "square-refund-created.json": ("square", "refund-created", "dev.agentos.refund.recorded.v1"),
    "ticket-cloudevent.json": ("cloudevent", "", "dev.agentos.ticket.received.v1"),
}


def test_every_sample_has_an_expectation() -> None:
    assert {p.name for p in EXAMPLES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("sample", sorted(EXPECTED))
async def test_every_sample_is_sent_without_source(gateway: Running, sample: str, tmp_path: Path) -> None:
    source, rule, published = EXPECTED[sample]
    body = json.loads((EXAMPLES / sample).read_text())
    body["event_id" if source == "square" else "id"] = new_event_id()  # this test's own delivery
    path = tmp_path / sample
    path.write_text(json.dumps(body))
    common = ["--gateway", gateway.url, "--key", key_for("integrator", gateway.tenant)]
    code, out, err = await _agentos("send", str(path), "--dry-run", *common)
    assert code == 0, err
    assert f"source {source!r} inferred from the payload" in " ".join(err.split()), err
    if rule:
        assert f"rule {rule!r}" in err and json.loads(out)["rule"] == rule
    assert await stored(gateway.bus, f"agentos.{gateway.tenant}.>", timeout=0.2) == [], "a dry run publishes nothing"
    code, out, err = await _agentos("send", str(path), *common)
    assert code == 0 and json.loads(out)["accepted"] >= 1, err
    events = await stored(gateway.bus, f"agentos.{gateway.tenant}.>", wait_for=1)
    assert published in {e.type for e in events}


async def test_a_payload_no_mapping_matches_lists_every_candidate(gateway: Running, tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"type": "invoice.paid", "id": "x"}))
    code, _, err = await _agentos(
        "send", str(path), "--gateway", gateway.url, "--key", key_for("integrator", gateway.tenant)
    )
    text = " ".join(err.split())
    assert code == 1 and "no mapping matches the payload" in text, err
    assert "zendesk: no rule of mapping 'zendesk' matches" in text and "square: no rule of mapping 'square'" in text
    assert "invoice.paid" in text and "--source" in text
    assert await stored(gateway.bus, f"agentos.{gateway.tenant}.>", timeout=0.2) == []


async def test_a_payload_two_mappings_match_is_ambiguous(
    start_gateway: Callable[..., Awaitable[Running]], tmp_path: Path
) -> None:
    extra = tmp_path / "mappings"
    extra.mkdir()
    # A second mapping of Square refunds under another source name: both match the sample.
    (extra / "square2.yaml").write_text(
        (SHIPPED_DIR / "square.yaml").read_text().replace("source: square", "source: square2")
    )
    gateway = await start_gateway(mappings_dir=str(extra))
    code, _, err = await _agentos(
        "send",
        str(EXAMPLES / "square-refund-created.json"),
        "--gateway",
        gateway.url,
        "--key",
        key_for("integrator", gateway.tenant),
    )
    text = " ".join(err.split())
    assert code == 1 and "matches more than one mapping" in text, err
    assert "square (rule 'refund-created')" in text and "square2 (rule 'refund-created')" in text
    assert await stored(gateway.bus, f"agentos.{gateway.tenant}.>", timeout=0.2) == []
    code, out, err = await _agentos(
        "send",
        str(EXAMPLES / "square-refund-created.json"),
        "--source",
        "square2",
        "--dry-run",
        "--gateway",
        gateway.url,
        "--key",
        key_for("integrator", gateway.tenant),
    )
    assert code == 0 and json.loads(out)["source"] == "square2", err
