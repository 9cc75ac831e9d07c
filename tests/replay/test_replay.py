"""Replay of a recorded goal into a sandbox: recorded model answers reproduce the outcome; another
model's answers are reported as differences; bad input is a one-line error. Real NATS, real
Postgres, the offline model over HTTP, whole runtimes (the original's and each sandbox's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from agentos_cli import replay_cmd
from agentos_cli.replay_cmd import recorded_scenario, replay_goal, summarize
from agentos_cli.supervisor import Runtime
from agentos_kernel import AgentOSError, Bus
from agentos_offline_model import ChatRequest, Scenario, plan_answer
from agentos_schemas.events import ContextReady, GoalPlanned, TaskCompleted
from rich.console import Console
from typer.testing import CliRunner

from tests.e2e.conftest import DEMO_SCENARIO
from tests.replay.conftest import Recorded

cli = typer.Typer()
cli.command()(replay_cmd.replay)


def cli_env(runtime: Runtime) -> dict[str, str]:
    """What a shell next to that runtime would have: its NATS URL and state dir (admin credentials)."""
    return {
        "AGENTOS_NATS_URL": runtime.settings.nats_url or "",
        "AGENTOS_STATE_DIR": str(runtime.settings.state_dir),
        "AGENTOS_DATABASE_URL": runtime.settings.database_url or "",
    }


def test_recorded_scenario_answers_every_agent_as_recorded(recorded: Recorded) -> None:
    data = recorded_scenario(recorded.events)
    scenario = Scenario.model_validate(data)
    plan = next(e.data for e in recorded.events if isinstance(e.data, GoalPlanned))
    assert data["rules"][0]["match"] == {"agent": "planner", "turn": 1}
    assert data["rules"][0]["respond"]["json"]["steps"] == [s.model_dump(mode="json") for s in plan.steps]
    # The first model turn of every task, asked with the messages the agent really got, gets the
    # recorded answer: the final output when the agent used no tool, else its first tool calls.
    completed = {e.data.task_id: e.data.output for e in recorded.events if isinstance(e.data, TaskCompleted)}
    contexts = [e.data for e in recorded.events if isinstance(e.data, ContextReady)]
    assert len(contexts) == len(completed) >= 10
    for ctx in contexts:
        request = ChatRequest(model="offline-smart", messages=list(ctx.messages))
        answer = plan_answer(scenario, request)
        assert answer.rule is not None, f"no recorded answer for {ctx.task_id}"
        if ctx.agent in ("research", "memory-keeper"):
            assert answer.tool_calls, ctx.task_id
        else:
            assert json.loads(answer.content or "") == completed[ctx.task_id], ctx.task_id
    # Tool arguments come back whole: propose_memory's content and tags from memory.proposed.
    keeper = "memory-keeper store-findings (capability: memory, attempt 1) turn 1"
    proposals = next(r for r in data["rules"] if r["name"].endswith(keeper))
    calls = proposals["respond"]["tool_calls"]
    assert [c["name"] for c in calls] == ["propose_memory"] * 3
    assert calls[0]["arguments"]["tags"] == ["competitor", "brightline-data"]
    # research-b ran twice (QA rejected it once): two attempts, answered separately.
    redo = [r for r in data["rules"] if "research-b (capability: research, attempt 2)" in r["name"]]
    assert [r["match"]["turn"] for r in redo] == [1, 2]
    assert "$0.25 per 1,000 events" in redo[-1]["respond"]["json"]["pricing"]


async def test_replay_with_recorded_answers_reproduces_the_result(runtime: Runtime, recorded: Recorded) -> None:
    report = await replay_goal(runtime.settings, recorded.goal_id, tenant=recorded.tenant, timeout=240)
    assert report.differences == [], report.differences
    assert report.equal and report.replay.status == "completed"
    assert report.replay.result == report.original.result and "Bottom line" in report.replay.result
    assert report.replay.outputs == report.original.outputs and len(report.replay.outputs) == 5
    assert report.replay.plans == report.original.plans
    assert [r for r in report.replay.reviews if r.endswith("rejected")] == ["research-b: rejected"]
    assert report.recorded_rules_used == report.recorded_rules > 10, "every recorded answer was used"
    assert report.sandbox_tenant.startswith("sandbox-") and report.sandbox_tenant != recorded.tenant
    assert report.replay.goal_id != recorded.goal_id
    # The sandbox ran on its own servers: the original's log holds nothing of the replay.
    bus = await Bus.connect(runtime.settings, source="replay-test")
    try:
        assert await replay_cmd.read_goal_events(bus, report.replay.goal_id) == []
        again = await replay_cmd.read_goal_events(bus, recorded.goal_id)
    finally:
        await bus.close()
    assert summarize(again, recorded.goal_id, recorded.tenant) == report.original


def altered_scenario(folder: Path) -> Path:
    """The demo world, except that research C reports another price and QA rejects nothing."""
    demo = yaml.safe_load(DEMO_SCENARIO.read_text())
    rules: list[dict[str, Any]] = []
    for rule in demo["rules"]:
        if rule["name"] == "qa-rejects-cobalt-once":
            continue
        if rule["name"] == "research-c-answer":
            rule["respond"]["json"]["pricing"] = "Capacity licences from $75,000 per year"
        rules.append(rule)
    path = folder / "altered.yaml"
    path.write_text(yaml.safe_dump({**demo, "rules": rules}, sort_keys=False))
    return path


def test_replay_against_other_answers_lists_the_differences(
    runtime: Runtime, recorded: Recorded, tmp_path: Path
) -> None:
    args = [
        recorded.goal_id,
        "--mode",
        "offline",
        "--scenario",
        str(altered_scenario(tmp_path)),
        "--timeout",
        "240",
        "--json",
    ]
    result = CliRunner().invoke(cli, args, env=cli_env(runtime))
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["equal"] is False and report["mode"] == "offline"
    assert report["replay"]["status"] == report["original"]["status"] == "completed"
    differences = report["differences"]
    assert any(d.startswith("output of step research-c: pricing:") and "$75,000" in d for d in differences), differences
    assert any(d.startswith("QA verdicts:") for d in differences), differences
    assert not any(d.startswith(("status", "plan")) for d in differences), differences


def test_unknown_goal_is_a_one_line_error(runtime: Runtime) -> None:
    result = CliRunner().invoke(cli, ["0190aaaa-0000-7000-8000-000000000000"], env=cli_env(runtime))
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no goal '0190aaaa-0000-7000-8000-000000000000' in the event log" in result.stderr
    result = CliRunner().invoke(cli, ["not-a-uuid", "--tenant", "nobody"], env=cli_env(runtime))
    assert result.exit_code == 2
    assert "no goal 'not-a-uuid' in the event log of tenant 'nobody'" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mode", "live"], "--mode must be one of recorded, offline"),
        (["--scenario", "x.yaml"], "--scenario is for --mode offline"),
        (["--mode", "offline", "--scenario", "/nonexistent/x.yaml"], "no scenario file at"),
        (["--sandbox-tenant", "Bad Tenant"], "sandbox tenant 'Bad Tenant' must match"),
    ],
)
def test_bad_options_are_one_line_errors(runtime: Runtime, recorded: Recorded, extra: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, [recorded.goal_id, *extra], env=cli_env(runtime))
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0


async def test_the_sandbox_tenant_is_never_the_original(runtime: Runtime, recorded: Recorded) -> None:
    with pytest.raises(AgentOSError, match="sandbox tenant must differ"):
        await replay_goal(runtime.settings, recorded.goal_id, sandbox_tenant=recorded.tenant)


def test_the_comparison_names_each_difference(recorded: Recorded) -> None:
    original = summarize(recorded.events, recorded.goal_id, recorded.tenant)
    assert replay_cmd.compare(original, original) == []
    other = replay_cmd.GoalSummary(**{**original.__dict__})
    other.status, other.code, other.result = "failed", "deadline", "deadline of 600s passed"
    other.plans = [[{**s, "capability": "write"} if s["step_id"] == "research-a" else s for s in original.plans[0]]]
    other.outputs = {**original.outputs, "research-c": {**original.outputs["research-c"], "pricing": "free"}}
    del other.outputs["store-findings"]
    differences = replay_cmd.compare(original, other)
    assert differences[0] == "status: completed ≠ failed (deadline)"
    assert 'plan r0 step research-a capability: "research" ≠ "write"' in differences
    assert any(d.startswith("output of step research-c: pricing: ") and d.endswith('≠ "free"') for d in differences)
    assert "output of step store-findings: only in the original" in differences
    assert any(d.startswith("result text differs from line 1: ") for d in differences)
    out = Console(record=True, width=200)
    report = replay_cmd.ReplayReport("offline", "sandbox-x", original, other, differences)
    replay_cmd.render_report(report, out)
    text = out.export_text()
    assert f"{len(differences)} difference(s):" in text and "status: completed ≠ failed (deadline)" in text
