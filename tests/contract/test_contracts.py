"""contracts/ is generated from the code, stays in step with it, and describes real events."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from agentos_cli import contracts
from agentos_schemas import CATALOGUE, Event, encode
from agentos_schemas.events import GoalPlanned, PlanStep, TaskCompleted, Usage

ROOT = Path(__file__).resolve().parents[2] / "contracts"


def test_checked_in_contracts_match_the_code() -> None:
    assert contracts.drift(ROOT) == [], "run `agentos contracts` and commit the result"


def test_every_catalogue_type_has_a_schema_and_an_asyncapi_channel() -> None:
    doc = json.loads((ROOT / "asyncapi.json").read_text())
    assert doc["asyncapi"] == "3.0.0"
    for type_ in CATALOGUE:
        assert (ROOT / "events" / f"{type_}.json").exists()
        assert type_ in doc["channels"]


@pytest.mark.parametrize(
    "event",
    [
        Event(
            data=GoalPlanned(
                goal_id="g",
                revision=0,
                planner="workflow:demo",
                steps=(PlanStep(step_id="a", capability="research", instruction="x"),),
            ),
            source="orchestrator",
            type=GoalPlanned.ce_type(),
            tenant="acme",
            dataschema=GoalPlanned.dataschema(),
        ),
        Event(
            data=TaskCompleted(task_id="t", goal_id="g", step_id="a", agent="research", output={"k": 1}, usage=Usage()),
            source="specialist",
            type=TaskCompleted.ce_type(),
            tenant="acme",
            dataschema=TaskCompleted.dataschema(),
        ),
    ],
    ids=lambda e: e.type,
)
def test_real_events_validate_against_their_contract(event: Event[object]) -> None:
    schema = json.loads((ROOT / "events" / f"{event.type}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(encode(event)), schema)


def test_a_wrong_payload_fails_its_contract() -> None:
    schema = json.loads((ROOT / "events" / f"{GoalPlanned.ce_type()}.json").read_text())
    bad = {
        "specversion": "1.0",
        "id": "x",
        "source": "s",
        "type": GoalPlanned.ce_type(),
        "data": {"goal_id": "g", "revision": -1, "steps": [], "planner": "p"},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_mcp_tools_contract_holds_valid_schemas_for_every_tool() -> None:
    """contracts/mcp-tools.json (AgentOS's MCP server): every tool has an input and an output
    schema that are valid JSON Schemas; a result of the right shape validates, a wrong one does not."""
    doc = json.loads((ROOT / "mcp-tools.json").read_text())
    from agentos_gateway.mcp_server.tools import TOOLS

    assert [t["name"] for t in doc["tools"]] == list(TOOLS)
    for tool in doc["tools"]:
        for key in ("inputSchema", "outputSchema"):
            jsonschema.Draft202012Validator.check_schema(tool[key])
        assert tool["outputSchema"]["type"] == "object" and tool["description"], tool["name"]
    halts = next(t for t in doc["tools"] if t["name"] == "list_halts")["outputSchema"]
    jsonschema.validate({"halts": [], "count": 0}, halts)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"halts": [{"key": "halt.all"}], "count": 1}, halts)
    assert {t["uriTemplate"] for t in doc["resourceTemplates"]} == {
        "agentos://goals/{goal_id}/report",
        "agentos://goals/{goal_id}/audit-trail",
    }
