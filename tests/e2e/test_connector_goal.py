"""A goal end to end through an MCP connector, on the whole runtime: a charter whose ``tools:``
names ``time.*`` (the reference ``mcp-server-time`` over stdio, shipped as the ``time``
connector); the offline model plans one step for it and, as the agent, calls
``time.get_current_time`` through a tool call; the specialist's one tool path asks the policy
(with the tool's classification and pinned definition hash), calls the server and hands the
result back; the goal completes with the server's answer in it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from agentos_cli.goals import submit
from agentos_kernel import Bus
from agentos_kernel.testing import unique
from agentos_schemas.events import ContextReady, GoalCompleted, TaskCompleted
from agentos_schemas.events.policy import PolicyDecided

from tests.e2e.conftest import charters_dir, outcome, scenario_file

CLOCK = """---
name: clock
version: "1"
role: Tells the time in a time zone, asking the time server.
capabilities: [clock]
model: fast
tools: ["time.*"]
max_tool_rounds: 2
capacity: 2
memory: {kinds: [], k: 0}
output_schema: {type: object, required: [answer], properties: {answer: {type: string}}}
---
Ask the time server, then answer with what it said.
"""
RULES = [
    {
        "name": "plan-clock",
        "match": {"agent": "planner", "user_contains": "CLOCK"},
        "respond": {"json": {"steps": [{"step_id": "now", "capability": "clock", "instruction": "Tell the time."}]}},
    },
    {
        "name": "clock-asks-the-server",
        "match": {"agent": "clock", "has_tool_result": False},
        "respond": {"tool_calls": [{"name": "time__get_current_time", "arguments": {"timezone": "Europe/Oslo"}}]},
    },
    {
        "name": "clock-answers",
        "match": {"agent": "clock", "has_tool_result": True},
        "respond": {"json": {"answer": "the server said: {tool_result}"}},
    },
]


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The shipped charters plus ``clock``, and the e2e scenario with the clock's rules first."""
    folder = tmp_path_factory.mktemp("clock")
    charters = charters_dir(folder)
    (charters / "clock.md").write_text(CLOCK)
    scenario = scenario_file(folder)
    merged = yaml.safe_load(scenario.read_text())
    merged["rules"] = RULES + merged["rules"]
    scenario.write_text(yaml.safe_dump(merged, sort_keys=False))
    return {"AGENTOS_CHARTERS_DIR": str(charters), "AGENTOS_OFFLINE_SCENARIO": str(Path(scenario))}


async def test_a_goal_runs_end_to_end_through_the_time_servers_tool(rbus: Bus) -> None:
    goal = await submit(rbus, "CLOCK: what time is it in Oslo?", tenant=unique("clock"))
    final, events = await outcome(rbus, goal.data.goal_id, timeout=60)
    assert isinstance(final.data, GoalCompleted), final.data
    (decided,) = [
        e.data for e in events if isinstance(e.data, PolicyDecided) and e.data.request.tool == "time.get_current_time"
    ]
    assert decided.decision == "allow" and decided.request.resource == "time:get_current_time"
    classification = decided.request.classification
    assert classification is not None and classification.access == "read"
    assert classification.data_classes == ("public",) and classification.definition_hash.startswith("sha256:")
    (ready,) = [e.data for e in events if isinstance(e.data, ContextReady) and e.data.agent == "clock"]
    assert ready.manifest.tool_definitions["time.get_current_time"] == classification.definition_hash
    (done,) = [e.data for e in events if isinstance(e.data, TaskCompleted) and e.data.agent == "clock"]
    answer = done.output["answer"]
    assert answer.startswith("the server said: [data from time.get_current_time (tool output)"), answer
    assert "Europe/Oslo" in answer and done.usage.tool_calls == 1
