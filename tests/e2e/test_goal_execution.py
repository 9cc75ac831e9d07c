"""Goal execution end to end: plan, parallel specialists, QA gate and redo, memory, limits, faults,
crash recovery — on real NATS and Postgres with the offline model over HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from agentos_cli.goals import submit
from agentos_cli.supervisor import Runtime
from agentos_kernel import Bus
from agentos_kernel.testing import eventually, unique
from agentos_schemas import EVENTS_STREAM, Event
from agentos_schemas.events import (
    ContextReady,
    GoalCompleted,
    GoalFailed,
    GoalPlanned,
    Limits,
    MemoryCommitted,
    MemoryProposed,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    TaskReviewed,
    TaskStarted,
)
from agentos_schemas.events.policy import ActionExecuted, BudgetSettled, PolicyDecided
from nats.js import api

from tests.e2e.conftest import charters_dir, goal_events, outcome, scenario_file
from tests.specialist.mcp_servers.notes import NotesServer

SEED = "Research our three main competitors and draft a summary report"

NOTER = """---
name: noter
version: "1"
role: Keeps notes in the team's notes service.
capabilities: [note]
model: fast
tools: ["notes.add_note"]
max_tool_rounds: 2
capacity: 2
memory: {kinds: [], k: 0}
output_schema: {type: object, required: [answer], properties: {answer: {type: string}}}
---
Add the note, then say what the notes service answered.
"""
NOTES_CONNECTOR = """name: notes
http: {{url: '{url}'}}
tools:
  add_note: {{access: write, data_classes: [internal]}}
"""
NOTER_POLICY = """  noter:
    team: default
    tools: ["notes.add_note"]
    write: ["notes:*"]
"""
NOTER_RULES = [
    {
        "name": "plan-note",
        "match": {"agent": "planner", "user_contains": "NOTE-IT"},
        "respond": {"json": {"steps": [{"step_id": "note", "capability": "note", "instruction": "Note it."}]}},
    },
    {
        "name": "noter-writes",
        "match": {"agent": "noter", "has_tool_result": False},
        "respond": {"tool_calls": [{"name": "notes__add_note", "arguments": {"text": "call the customer back"}}]},
    },
    {
        "name": "noter-answers",
        "match": {"agent": "noter", "has_tool_result": True},
        "respond": {"json": {"answer": "noted: {tool_result}"}},
    },
]


@pytest.fixture(scope="module")
def notes_server() -> Any:
    """A notes service the agents reach over MCP (streamable HTTP, written with the SDK)."""
    with NotesServer() as server:
        yield server


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory, notes_server: NotesServer) -> dict[str, str]:
    """The e2e runtime plus the noter charter and the notes connector, with one crash point armed:
    the specialist kills itself (SIGKILL) once, right after it published the ``action.executed``
    of its first ``notes.add_note`` and before the task's result."""
    folder = tmp_path_factory.mktemp("noter")
    charters = charters_dir(folder)
    (charters / "noter.md").write_text(NOTER)
    (folder / "connectors").mkdir()
    (folder / "connectors" / "notes.yaml").write_text(NOTES_CONNECTOR.format(url=notes_server.url))
    scenario = scenario_file(folder)
    merged = yaml.safe_load(scenario.read_text())
    merged["rules"] = NOTER_RULES + merged["rules"]
    scenario.write_text(yaml.safe_dump(merged, sort_keys=False))
    policy = shutil.copytree(Path(str(resources.files("agentos_policy") / "policies" / "default")), folder / "policy")
    text = (policy / "policy.yaml").read_text()  # the shipped policy, and the noter may add notes
    (policy / "policy.yaml").write_text(text.replace("  research:\n", NOTER_POLICY + "  research:\n", 1))
    return {
        "AGENTOS_POLICY_DIR": str(policy),
        "AGENTOS_CHARTERS_DIR": str(charters),
        "AGENTOS_OFFLINE_SCENARIO": str(scenario),
        "AGENTOS_CONNECTORS_DIR": str(folder / "connectors"),
        "AGENTOS_CRASH_POINT": "specialist.after_action_executed:notes.add_note",
        "AGENTOS_CRASH_ONCE": str(folder / "crashed"),
    }


def of(events: list[Event[Any]], cls: type[Any]) -> list[Any]:
    return [e.data for e in events if isinstance(e.data, cls)]


def intervals(events: list[Event[Any]], step_prefix: str) -> list[tuple[float, float]]:
    started = {e.data.task_id: e.time.timestamp() for e in events if isinstance(e.data, TaskStarted)}
    return [
        (started[e.data.task_id], e.time.timestamp())
        for e in events
        if isinstance(e.data, TaskCompleted)
        and e.data.step_id.startswith(step_prefix)
        and "/qa" not in e.data.task_id
        and e.data.task_id in started
    ]


async def test_demo_goal_end_to_end(rbus: Bus) -> None:
    goal = await submit(rbus, SEED, tenant=unique("demo"))
    final, events = await outcome(rbus, goal.data.goal_id)
    assert isinstance(final.data, GoalCompleted), final.data
    plan = of(events, GoalPlanned)[0]
    assert plan.planner.startswith("llm:")
    research = [s for s in plan.steps if s.capability == "research"]
    assert len(research) == 3 and all(not s.depends_on for s in research), "three independent research steps"
    spans = intervals(events, "research-")
    assert len(spans) >= 3
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :]), (
        "research tasks overlap in time"
    )
    reviews = [(r.step_id, r.verdict) for r in of(events, TaskReviewed)]
    assert ("research-b", "rejected") in reviews and ("research-b", "accepted") in reviews
    redo = [a for a in of(events, TaskAssigned) if a.step_id == "research-b" and a.review_of is None]
    assert [a.attempt for a in redo] == [1, 2] and redo[1].feedback and "Pricing" in redo[1].feedback
    writer_ctx = next(c for c in of(events, ContextReady) if c.agent == "writer")
    assert "semantic" in writer_ctx.manifest.memory_kinds.values()
    assert "Tone guidelines (house style)" in writer_ctx.messages[-1]["content"]
    assert "Bottom line" in final.data.result and final.data.cost_usd > 0 and final.data.tokens > 0
    committed = [m for m in of(events, MemoryCommitted) if m.status == "committed"]
    assert sum(len(m.entry_ids) for m in committed) == 3

    async def every_reservation_settled_once() -> bool:  # the answering calls' through task.completed
        logged = await goal_events(rbus, goal.data.goal_id)
        reserved = {
            d.reservation_id for d in of(logged, PolicyDecided) if d.request.action == "model_call" and d.reservation_id
        }
        settled = [s.reservation_id for s in of(logged, BudgetSettled)]
        return bool(reserved) and set(settled) == reserved and len(settled) == len(reserved)

    await eventually(every_reservation_settled_once, timeout=30, every=0.5)
    assert all(c.settlement is not None for c in of(events, TaskCompleted))  # every answer was a model's


async def test_second_run_recalls_findings_from_episodic_memory(rbus: Bus) -> None:
    tenant = unique("recall")
    first = await submit(rbus, SEED, tenant=tenant)
    assert isinstance((await outcome(rbus, first.data.goal_id))[0].data, GoalCompleted)
    second = await submit(rbus, SEED, tenant=tenant)
    final, events = await outcome(rbus, second.data.goal_id)
    assert isinstance(final.data, GoalCompleted)
    research_ctx = [c for c in of(events, ContextReady) if c.agent == "research"]
    assert any("episodic" in c.manifest.memory_kinds.values() for c in research_ctx)
    recalled = [
        c
        for c in research_ctx
        if "Brightline" in c.messages[-1]["content"] and "$45 per user" in c.messages[-1]["content"]
    ]
    assert recalled, "the first run's finding is in the second run's research context"


async def no_side_effect_twice(events: list[Event[Any]]) -> None:
    for cls in (TaskAssigned, TaskCompleted):
        counts = Counter(d.task_id for d in of(events, cls))
        assert max(counts.values()) == 1, f"{cls.__name__} published twice: {counts.most_common(2)}"
    proposals = Counter(d.entry_id for d in of(events, MemoryProposed))
    assert proposals and max(proposals.values()) == 1


@pytest.mark.parametrize("victim", ["orchestrator", "specialist"])
async def test_service_killed_mid_goal_the_goal_still_completes(runtime: Runtime, rbus: Bus, victim: str) -> None:
    goal = await submit(rbus, SEED, tenant=unique("kill"))

    async def research_running() -> bool:
        return any(isinstance(e.data, TaskStarted) for e in await goal_events(rbus, goal.data.goal_id))

    await eventually(research_running, timeout=60, every=0.1)
    await runtime.restart(victim)  # SIGKILL; the supervisor starts it again
    final, events = await outcome(rbus, goal.data.goal_id, timeout=120)
    assert isinstance(final.data, GoalCompleted), final.data
    await no_side_effect_twice(events)


async def test_failing_tool_ends_the_goal_within_its_limits(rbus: Bus) -> None:
    limits = Limits(max_retries=1, max_replans=1, max_steps=10, deadline_s=120)
    goal = await submit(rbus, "FAULT-TOOL check the status page", tenant=unique("ft"), limits=limits)
    final, events = await outcome(rbus, goal.data.goal_id)
    assert isinstance(final.data, GoalFailed)
    assert final.data.code in ("max_replans", "max_retries") and "tool loop exceeded" in final.data.reason
    failures = of(events, TaskFailed)
    assert len(failures) == 4, "2 attempts per plan revision, 2 revisions"
    assert len(of(events, GoalPlanned)) == 2
    assert final.data.tokens < 20_000


async def test_invalid_model_output_ends_the_goal_with_the_reason(rbus: Bus) -> None:
    limits = Limits(max_retries=0, max_replans=1, deadline_s=120)
    goal = await submit(rbus, "FAULT-JSON answer in JSON", tenant=unique("fj"), limits=limits)
    final, events = await outcome(rbus, goal.data.goal_id)
    assert isinstance(final.data, GoalFailed) and final.data.code == "max_replans"
    assert all("invalid output after 2 attempts" in f.reason for f in of(events, TaskFailed))
    assert len(of(events, TaskFailed)) == 2


async def test_fallback_model_answers_when_the_primary_fails(rbus: Bus) -> None:
    goal = await submit(rbus, "FALLBACK please answer", tenant=unique("fb"))
    final, events = await outcome(rbus, goal.data.goal_id)
    assert isinstance(final.data, GoalCompleted)
    done = of(events, TaskCompleted)[0]
    calls = done.usage.calls
    assert [c.model for c in calls] == ["openai/offline-flaky", "openai/offline-fast"]
    assert not calls[0].ok and "InternalServerError" in (calls[0].error or "") and calls[1].ok
    assert done.output == {"answer": "answered by the fallback model"}


async def test_contexts_are_isolated_between_goals(rbus: Bus) -> None:
    tenant = unique("iso")
    a = await submit(rbus, "ISOLATION project KESTREL-7731", tenant=tenant)
    b = await submit(rbus, "ISOLATION project OSPREY-2219", tenant=tenant)
    (_, ev_a), (_, ev_b) = await asyncio.gather(outcome(rbus, a.data.goal_id), outcome(rbus, b.data.goal_id))
    for mine, theirs, events in (("KESTREL-7731", "OSPREY-2219", ev_a), ("OSPREY-2219", "KESTREL-7731", ev_b)):
        contexts = of(events, ContextReady)
        assert contexts
        for ctx in contexts:
            text = repr(ctx.messages) + ctx.manifest.model_dump_json()
            assert mine in text and theirs not in text


async def test_declared_workflow_runs_without_the_llm_planner(rbus: Bus) -> None:
    goal = await submit(
        rbus, "Competitor report from the declared workflow", tenant=unique("wf"), workflow="competitor-report"
    )
    final, events = await outcome(rbus, goal.data.goal_id)
    assert isinstance(final.data, GoalCompleted), final.data
    plan = of(events, GoalPlanned)[0]
    assert plan.planner == "workflow:competitor-report" and plan.usage.calls == ()
    assert {s.step_id for s in plan.steps} == {
        "research-a",
        "research-b",
        "research-c",
        "write-report",
        "store-findings",
    }


async def test_unknown_workflow_fails_with_the_reason(rbus: Bus) -> None:
    goal = await submit(rbus, "nothing", tenant=unique("wf"), workflow="no-such-flow")
    final, _ = await outcome(rbus, goal.data.goal_id)
    assert isinstance(final.data, GoalFailed) and final.data.code == "planner_failed"
    assert "no-such-flow" in final.data.reason


CLOUDEVENTS_SCHEMA = Path(__file__).parent / "spec" / "cloudevents.json"  # the spec's own (spec/README.md)


async def test_every_event_of_a_demo_goal_is_a_valid_cloudevent(rbus: Bus) -> None:
    """What AgentOS itself publishes for a goal — plan, contexts, policy decisions, tasks, reviews,
    memory, budget settlements, the outcome — validated message by message against the official
    CloudEvents JSON Schema, formats (date-time, uri, uri-reference) checked too."""
    tenant = unique("spec")
    goal = await submit(rbus, SEED, tenant=tenant)
    final, _ = await outcome(rbus, goal.data.goal_id)
    assert isinstance(final.data, GoalCompleted), final.data
    validator = jsonschema.Draft7Validator(
        json.loads(CLOUDEVENTS_SCHEMA.read_text()), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    sub = await rbus.js.subscribe(
        f"agentos.{tenant}.>", stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
    )
    checked: Counter[str] = Counter()
    try:
        while True:
            msg = await sub.next_msg(timeout=5)
            doc = json.loads(msg.data)
            errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
            assert not errors, (doc.get("type"), errors)
            checked[doc["type"].removeprefix("dev.agentos.")] += 1
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    for kind in ("goal.submitted", "goal.planned", "context.ready", "policy.decided", "task.completed"):
        assert checked[kind + ".v1"] > 0, (kind, checked)
    assert checked["goal.completed.v1"] == 1 and sum(checked.values()) > 20, checked


async def test_a_goal_runs_end_to_end_through_the_time_servers_tool(rbus: Bus) -> None:
    """A goal through an MCP connector (the clock charter in charters/, its rules in
    fault_rules.yaml): ``time.*`` is the reference ``mcp-server-time`` over stdio, shipped as the
    ``time`` connector; the offline model, as the agent, calls ``time.get_current_time``; the one
    tool path asks the policy (classification, pinned definition hash), calls the server and hands
    the result back."""
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


async def test_a_write_survives_a_specialist_killed_after_it_and_is_done_once(
    rbus: Bus, runtime_env: dict[str, str], notes_server: NotesServer
) -> None:
    """The specialist process is SIGKILLed (a crash point) after the MCP write ran and its
    ``action.executed`` was published, before the task's result; the supervisor starts it again,
    the task is delivered again, and its re-run reuses the recorded result: the notes service was
    called once, and the goal completes."""
    before = len(notes_server.state.notes)
    goal = await submit(rbus, "NOTE-IT: the customer wants a call back", tenant=unique("crash"))
    final, events = await outcome(rbus, goal.data.goal_id, timeout=90)
    assert Path(runtime_env["AGENTOS_CRASH_ONCE"]).exists(), "the specialist was killed at the crash point"
    assert isinstance(final.data, GoalCompleted), final.data
    assert len(notes_server.state.notes) == before + 1, "the notes service was called once"
    executed = [e.data for e in events if isinstance(e.data, ActionExecuted)]
    assert [(a.tool, a.outcome) for a in executed] == [("notes.add_note", "succeeded")], executed
    (done,) = [e.data for e in events if isinstance(e.data, TaskCompleted) and e.data.agent == "noter"]
    assert "already done:" in done.output["answer"], done.output
