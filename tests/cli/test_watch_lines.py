"""`agentos watch` off a terminal (a CI log, a pipe) prints one line per change; a goal that waits
for a human says so with the command that approves it; text from the log that looks like an emoji
shortcode prints as it is. Through the real CLI against the session's NATS."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from agentos_cli.main import app
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.testing import unique
from agentos_schemas import Event
from agentos_schemas.events import GoalFailed, GoalPlanned, GoalSubmitted, PlanStep, TaskAssigned, TaskFailed
from agentos_schemas.events.policy import ApprovalDecided, ApprovalRequested
from agentos_schemas.rpc import PolicyRequest
from typer.testing import CliRunner, Result


async def watch(settings: KernelSettings, goal_id: str) -> Result:
    env = {"AGENTOS_NATS_URL": settings.nats_url or "", "AGENTOS_STATE_DIR": "/nonexistent", "COLUMNS": None}
    return await asyncio.to_thread(CliRunner().invoke, app, ["watch", goal_id], env=env)


def goal_events(bus: Bus, tenant: str, goal_id: str, *, decided: bool) -> list[Event[Any]]:
    task = f"{goal_id}/0/pay/1"
    request = PolicyRequest(
        tenant=tenant,
        principal="agent:finance",
        action="outside_action",
        resource="bank:payments",
        agent="finance",
        goal_id=goal_id,
        task_id=task,
    )
    payloads: list[Any] = [
        GoalSubmitted(goal_id=goal_id, text="Refund the customer"),
        GoalPlanned(
            goal_id=goal_id,
            revision=0,
            planner="llm:fast",
            steps=(PlanStep(step_id="pay", capability="finance", instruction="refund"),),
        ),
        TaskAssigned(
            task_id=task,
            goal_id=goal_id,
            step_id="pay",
            attempt=1,
            agent="finance",
            capability="finance",
            instruction="refund",
            goal_text="Refund the customer",
        ),
        ApprovalRequested(
            approval_id=f"ap-{goal_id}",
            decision_id="d-1",
            request=request,
            risk="high",
            needed=2,
            approver_role="finance-approver",
            expires_at=dt.datetime.now(dt.UTC),
        ),
    ]
    if decided:
        payloads += [
            ApprovalDecided(
                approval_id=f"ap-{goal_id}",
                status="rejected",
                decided_by=("bob",),
                reason="wrong account",
                goal_id=goal_id,
                task_id=task,
            ),
            TaskFailed(
                task_id=task,
                goal_id=goal_id,
                step_id="pay",
                agent="finance",
                retryable=False,
                reason="policy denied the tool call (loop): repeated :loop: :warning: call",
            ),
            GoalFailed(goal_id=goal_id, code="max_retries", reason="the step failed :loop:"),
        ]
    return [bus.new(p, tenant=tenant, correlationid=goal_id, subject=f"goal/{goal_id}") for p in payloads]


async def test_watch_off_a_terminal_prints_progress_and_the_command_to_approve(
    bus: Bus, settings: KernelSettings, tenant: str
) -> None:
    goal_id = unique("g")
    for event in goal_events(bus, tenant, goal_id, decided=True):
        await bus.publish(event)
    result = await watch(settings, goal_id)
    assert result.exit_code == 1, result.output  # the goal failed
    out = result.stdout
    assert f"goal {goal_id}: Refund the customer" in out
    assert "step pay: assigned (finance, attempt 1)" in out
    assert (
        f"waiting for a human: approval ap-{goal_id} (high risk, outside_action bank:payments, agent finance) "
        "needs 2 different people with role 'finance-approver'; approve with: "
        f"agentos approve ap-{goal_id} --as <user>"
    ) in out
    assert f"approval ap-{goal_id} rejected by bob: wrong account" in out
    assert "step pay: failed" in out and f"goal {goal_id}: failed" in out
    # what the log says is printed as it is: no emoji in place of shortcode-like text
    assert "repeated :loop: :warning: call" in out and "the step failed :loop:" in out
    assert "\u27bf" not in out and "\u26a0" not in out


async def test_a_goal_still_waiting_says_so_while_it_is_watched(
    bus: Bus, settings: KernelSettings, tenant: str
) -> None:
    goal_id = unique("g")
    for event in goal_events(bus, tenant, goal_id, decided=False):
        await bus.publish(event)
    watching = asyncio.create_task(watch(settings, goal_id))
    await asyncio.sleep(3.0)
    await bus.publish(
        bus.new(
            GoalFailed(goal_id=goal_id, code="halted", reason="stopped by the test"),
            tenant=tenant,
            correlationid=goal_id,
            subject=f"goal/{goal_id}",
        )
    )
    result = await asyncio.wait_for(watching, 30)
    lines = result.stdout.splitlines()
    waiting = next(i for i, line in enumerate(lines) if f"agentos approve ap-{goal_id} --as <user>" in line)
    ended = next(i for i, line in enumerate(lines) if f"goal {goal_id}: failed" in line)
    assert waiting < ended
