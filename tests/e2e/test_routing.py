"""Routing by capability, end to end on real NATS and Postgres: work goes only to an agent with the
capability it needs; work no registered agent serves is held with the reason (a `goal.held` fact,
shown by `agentos status` and `GET /goals/{id}`), never given to whichever agent is free; a goal
naming a capability (or a workflow needing one) nobody serves is refused at submit, over HTTP
and by the CLI, with the known capabilities. The shipped charters have no `triage` agent."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from agentos_cli.goals import submit
from agentos_cli.supervisor import Runtime
from agentos_kernel import Bus
from agentos_kernel.testing import eventually, unique
from agentos_schemas import Event, new_event_id
from agentos_schemas import subjects as s
from agentos_schemas.charter import Charter
from agentos_schemas.events import AgentAnnounced, GoalHeld, GoalPlanned, GoalSubmitted, TaskAssigned, TaskCompleted

from tests.e2e.conftest import goal_events
from tests.gateway.conftest import stored

EXAMPLES = Path(__file__).resolve().parents[2] / "services" / "gateway" / "examples"
FOLLOW_UP = {
    "name": "ticket-follow-up",
    "description": "Look the order up, then triage the ticket.",
    "steps": [
        {"step_id": "lookup", "capability": "research", "instruction": "Look the order up in the research library."},
        {
            "step_id": "reply",
            "capability": "triage",
            "instruction": "Triage the ticket and draft the reply.",
            "depends_on": ["lookup"],
        },
    ],
}


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The shipped workflows plus one whose second step needs `triage`, which no agent serves."""
    folder = tmp_path_factory.mktemp("workflows")
    shipped = resources.files("agentos_orchestrator.workflows") / "competitor-report.yaml"
    (folder / "competitor-report.yaml").write_text(shipped.read_text())
    (folder / "ticket-follow-up.yaml").write_text(yaml.safe_dump(FOLLOW_UP))
    return {"AGENTOS_WORKFLOWS_DIR": str(folder)}


async def agentos(runtime: Runtime, *args: str) -> tuple[int, str, str]:
    """The real CLI against the test's runtime (found from its state directory)."""
    env = {**os.environ, "AGENTOS_STATE_DIR": str(runtime.settings.state_dir), "COLUMNS": "300"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentos_cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    return proc.returncode or 0, out.decode(), err.decode()


async def gateway_url(bus: Bus) -> str:
    kv = await bus.js.key_value(s.HEALTH_BUCKET)
    for key in await kv.keys():
        if key.startswith("gateway."):
            return str(json.loads((await kv.get(key)).value or b"{}")["url"])
    raise AssertionError("no gateway reports a url")


async def held_event(bus: Bus, goal_id: str, step_id: str | None) -> tuple[GoalHeld, list[Event[Any]]]:
    found: list[Any] = []

    async def held() -> bool:
        events = await goal_events(bus, goal_id)
        found[:] = [events, [e.data for e in events if isinstance(e.data, GoalHeld) and e.data.step_id == step_id]]
        return bool(found[1])

    await eventually(held, timeout=60, every=0.5)
    return found[1][0], found[0]


async def status_shows_held(runtime: Runtime, goal_id: str, step_id: str | None) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []

    async def shown() -> bool:
        code, out, err = await agentos(runtime, "status", "--json")
        assert code == 0, err
        rows[:] = [h for h in json.loads(out).get("held", []) if h["goal_id"] == goal_id]
        return any(h["step_id"] == step_id for h in rows)

    await eventually(shown, timeout=30, every=1.0)
    code, text, _ = await agentos(runtime, "status")
    assert code == 0 and "Held work" in text and goal_id in text
    return next(h for h in rows if h["step_id"] == step_id)


async def test_a_zendesk_ticket_is_held_for_triage_not_handled_by_research(
    runtime: Runtime, rbus: Bus, tmp_path: Path
) -> None:
    ticket = json.loads((EXAMPLES / "zendesk-ticket-created.json").read_text())
    ticket["id"] = new_event_id()
    sample = tmp_path / "ticket.json"
    sample.write_text(json.dumps(ticket))
    code, out, err = await agentos(runtime, "send", str(sample))  # no --source: the mapping is inferred
    assert code == 0 and "source 'zendesk' inferred" in err, err
    goal_id = json.loads(out)["goal_id"]
    held, _ = await held_event(rbus, goal_id, None)
    assert held.capability == "triage" and held.reason.startswith("no agent serves capability 'triage'")
    assert "research" in held.served
    row = await status_shows_held(runtime, goal_id, None)
    assert row["capability"] == "triage" and "no agent serves capability 'triage'" in row["reason"]
    await asyncio.sleep(2)  # ticks pass; the goal stays held
    events = await goal_events(rbus, goal_id)
    assert not [e for e in events if isinstance(e.data, TaskAssigned | GoalPlanned)], "no agent took the ticket"
    async with httpx.AsyncClient(base_url=await gateway_url(rbus), timeout=15) as http:
        doc = (await http.get(f"/goals/{goal_id}", params={"tenant": events[0].tenant})).json()
    assert doc["status"] == "held" and doc["held"]["capability"] == "triage", doc


async def test_a_step_no_agent_serves_is_held_while_the_rest_runs(runtime: Runtime, rbus: Bus) -> None:
    goal = await submit(rbus, "Follow up ticket #77", tenant=unique("route"), workflow="ticket-follow-up")
    goal_id = goal.data.goal_id
    held, _ = await held_event(rbus, goal_id, "reply")
    assert held.capability == "triage" and "step 'reply' is held" in held.reason
    row = await status_shows_held(runtime, goal_id, "reply")
    assert row["capability"] == "triage"
    events = await goal_events(rbus, goal_id)
    assigned = [e.data for e in events if isinstance(e.data, TaskAssigned)]
    assert any(isinstance(e.data, TaskCompleted) and e.data.step_id == "lookup" for e in events)
    assert [(a.step_id, a.agent) for a in assigned if a.review_of is None] == [("lookup", "research")]
    assert not [a for a in assigned if a.step_id == "reply"], "the triage step went to no other agent"


async def test_an_unknown_capability_is_refused_at_submit_over_http_and_by_the_cli(runtime: Runtime, rbus: Bus) -> None:
    text = f"Triage ticket {unique('t')}"
    async with httpx.AsyncClient(base_url=await gateway_url(rbus), timeout=15) as http:
        refused = await http.post("/goals", json={"text": text, "capability": "triage"})
        step = await http.post("/goals", json={"text": text, "workflow": "ticket-follow-up"})
        unknown = await http.post("/goals", json={"text": text, "workflow": "no-such-flow"})
        served = await http.post("/goals", json={"text": "Research Cobalt Metrics", "capability": "research"})
    assert refused.status_code == 422 and refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "unknown_capability" and "unknown capability 'triage'" in problem["detail"]
    known = problem["errors"][0]["known_capabilities"]
    assert {"research", "write", "memory", "qa"} <= set(known) and "triage" not in known
    assert "research" in problem["detail"] and "write" in problem["detail"]
    assert step.status_code == 422 and step.json()["code"] == "unserved_capability"
    assert "'triage', which no agent serves" in step.json()["detail"]
    assert unknown.status_code == 422 and "ticket-follow-up" in unknown.json()["detail"]
    assert served.status_code == 202, served.text

    code, _, err = await agentos(runtime, "submit", text, "--capability", "triage", "--no-watch")
    flat = " ".join(err.split())
    assert code == 2 and "unknown capability 'triage'; known capabilities:" in flat and "research" in flat, err
    code, _, err = await agentos(runtime, "submit", text, "--workflow", "ticket-follow-up", "--no-watch")
    assert code == 2 and "which no agent serves" in " ".join(err.split()), err
    code, out, err = await agentos(
        runtime, "submit", "Research Brightline Data", "--capability", "research", "--no-watch"
    )
    assert code == 0 and "submitted goal" in out, err
    assert await goal_events_by_text(rbus, text) == [], "a refused goal publishes nothing"


async def goal_events_by_text(bus: Bus, text: str) -> list[GoalSubmitted]:
    return [
        e.data
        for e in await stored(bus, "agentos.*.goal.submitted", timeout=0.5)
        if isinstance(e.data, GoalSubmitted) and e.data.text == text
    ]


async def test_held_ticket_goes_on_when_an_agent_serving_triage_is_announced(rbus: Bus) -> None:
    """Last in this module: from here on the fleet has a (bus-announced) triage agent. It has room
    for every goal held for triage in this module (no specialist hosts it, so its tasks never end)."""
    ticket = json.loads((EXAMPLES / "zendesk-ticket-created.json").read_text())
    ticket["id"] = new_event_id()
    async with httpx.AsyncClient(base_url=await gateway_url(rbus), timeout=15) as http:
        goal_id = (await http.post("/ingest/zendesk", json=ticket)).json()["goal_id"]
    await held_event(rbus, goal_id, None)
    charter = Charter(name="triage", capabilities=("triage",), model="fast")
    await rbus.publish(
        rbus.new(
            AgentAnnounced(
                agent="triage",
                version="1",
                capabilities=("triage",),
                instance="e2e-triage",
                capacity=8,
                charter=charter,
            )
        )
    )

    seen: list[Event[Any]] = []

    async def assigned_to_triage() -> bool:
        seen[:] = await goal_events(rbus, goal_id)
        return any(isinstance(e.data, TaskAssigned) for e in seen)

    try:
        await eventually(assigned_to_triage, timeout=90, every=0.5)
    except AssertionError:
        raise AssertionError(f"no task assigned; the goal's events: {[(e.type, e.data) for e in seen]}") from None
    events = seen
    [plan] = [e.data for e in events if isinstance(e.data, GoalPlanned)]
    assert [s.capability for s in plan.steps] == ["triage"]
    assigned = [e.data for e in events if isinstance(e.data, TaskAssigned)]
    assert {(a.agent, a.capability) for a in assigned} == {("triage", "triage")}, "only the triage agent"
