"""Real MCP servers as governed tools: the reference time server (stdio) through the specialist's
one tool path — classification offered to the policy, the call, redaction, events — and the
connector files' rules (default deny, no literal secrets)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml
from agentos_kernel import Bus
from agentos_kernel.exceptions import ConfigError
from agentos_kernel.llm import LLM, ModelRegistry
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import unique
from agentos_offline_model.scenario import Scenario
from agentos_offline_model.server import OfflineModelServer
from agentos_schemas.events.connectors import ConnectorAnnounced
from agentos_schemas.events.policy import PolicyDecided

from tests.policy.conftest import logged, logged_at_least
from tests.specialist.conftest import connector, ring, run

SCENARIO = {
    "models": ["offline-fast"],
    "rules": [
        {
            "name": "clock-asks-the-time",
            "match": {"agent": "clock", "has_tool_result": False},
            "respond": {"tool_calls": [{"name": "time__get_current_time", "arguments": {"timezone": "Europe/Paris"}}]},
        },
        {"name": "clock-answers", "match": {"agent": "clock"}, "respond": {"json": {"answer": "it is now"}}},
    ],
}


@pytest.fixture(scope="module")
def offline_url() -> Iterator[str]:
    with OfflineModelServer(Scenario.from_yaml(yaml.safe_dump(SCENARIO))) as server:
        yield server.url


async def test_a_goal_reads_the_time_from_the_stdio_time_server(
    bus: Bus, policy_service: ServiceContext, offline_url: str, tenant: str
) -> None:
    llm = LLM(ModelRegistry.load(offline_url=offline_url))
    the_ring = ring(bus)
    try:
        outcome, progress, _ = await run(llm, the_ring, bus, tenant, unique("g"), "clock", ("time.*",))
    finally:
        await the_ring.close()
    assert outcome.ok and outcome.output == {"answer": "it is now"}, outcome.reason
    (result,) = [m["content"] for m in progress.messages if m.get("role") == "tool"]
    assert result.startswith("[data from time.get_current_time (tool output)")
    structured = json.loads(result.split("\n", 1)[1])
    assert structured["timezone"] == "Europe/Paris" and structured["datetime"].startswith("20")
    decided = await logged_at_least(bus, tenant, PolicyDecided, 3)
    (call,) = [d for d in decided if d.request.tool == "time.get_current_time"]
    assert call.decision == "allow" and call.request.resource == "time:get_current_time"
    assert call.request.classification.access == "read"
    assert call.request.classification.definition_hash.startswith("sha256:")
    assert call.request.args == {"timezone": "Europe/Paris"}
    announced = [a for a in await logged(bus, "default", ConnectorAnnounced) if a.connector == "time"]
    assert announced and announced[-1].protocol_version in ("2025-11-25", "2026-07-28")
    names = {t.name: t for t in announced[-1].tools}
    assert names["time.get_current_time"].state == "offered"
    assert names["time.get_current_time"].definition_hash == call.request.classification.definition_hash


def test_a_literal_credential_in_a_connector_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="looks like a credential"):
        connector("name: crm\nhttp: {url: 'http://x.test/mcp', headers: {Authorization: 'Bearer abc'}}\n")
    ok = connector(
        "name: crm\nhttp: {url: 'http://x.test/mcp', headers: {Authorization: {secret: crm, prefix: 'Bearer '}}}\n"
    )
    assert ok.http is not None and ok.transport == "http"


def test_a_connector_needs_exactly_one_transport() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        connector("name: twice\nstdio: {command: x}\nhttp: {url: 'http://x.test/'}\n")
