"""Humans in the loop through the CLI: approve, reject, two-person rule, roles, deadlines that
expire or escalate, and takeover of a task."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from agentos_cli.main import app
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import eventually, unique
from agentos_schemas.events import GoalEscalated, TaskAssigned, TaskCompleted
from agentos_schemas.events.policy import AlertRaised, ApprovalDecided, ApprovalVoted
from agentos_schemas.rpc import PolicyDecision
from typer.testing import CliRunner, Result

from tests.policy.conftest import ask, logged, logged_at_least, logged_events


async def cli(settings: KernelSettings, *args: str) -> Result:
    env = {"AGENTOS_NATS_URL": settings.nats_url or "", "AGENTOS_STATE_DIR": "/nonexistent", "COLUMNS": "250"}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def delete_record(bus: Bus, tenant: str, call: str) -> PolicyDecision:
    return await ask(
        bus,
        tenant,
        "finance",
        "tool_call",
        "delete_record",
        tool="delete_record",
        goal_id="g",
        task_id="t",
        call_id=call,
        args={"id": call},
    )


async def transfer(bus: Bus, tenant: str, call: str) -> PolicyDecision:
    return await ask(
        bus,
        tenant,
        "finance",
        "outside_action",
        "bank:payments",
        tool="transfer_funds",
        goal_id=unique("g"),
        task_id="t",
        call_id=call,
        args={"amount": "100", "to": "ACME"},
    )


async def test_approve_then_the_same_call_is_allowed(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tenant: str
) -> None:
    first = await delete_record(bus, tenant, "c1")
    assert first.decision == "require_approval" and first.approval_id
    listed = await cli(settings, "approvals", "--tenant", tenant, "--json")
    assert listed.exit_code == 0, listed.output
    assert [a["approval_id"] for a in json.loads(listed.output)["approvals"]] == [first.approval_id]
    voted = await cli(settings, "approve", first.approval_id, "--as", "alice", "--reason", "checked")
    assert voted.exit_code == 0 and "approved" in voted.output, voted.output
    again = await delete_record(bus, tenant, "c1")
    assert (again.decision, again.code) == ("allow", "approved") and "alice" in again.reasons[-1]
    assert again.approval_id == first.approval_id
    decided = await logged_at_least(bus, tenant, ApprovalDecided, 1)
    assert [(d.status, d.decided_by) for d in decided] == [("approved", ("alice",))]


async def test_reject_denies_with_the_reason(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tenant: str
) -> None:
    first = await delete_record(bus, tenant, "c2")
    assert first.approval_id
    result = await cli(settings, "reject", first.approval_id, "--as", "bob", "--reason", "wrong customer")
    assert result.exit_code == 0, result.output
    again = await delete_record(bus, tenant, "c2")
    assert (again.decision, again.code) == ("deny", "rejected") and "wrong customer" in again.reasons[0]
    late = await cli(settings, "approve", first.approval_id, "--as", "alice")
    assert late.exit_code == 1 and "already rejected" in late.output


async def test_two_person_rule(bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tenant: str) -> None:
    first = await transfer(bus, tenant, "c3")
    assert first.decision == "require_approval" and first.risk == "high" and first.approval_id
    one = await cli(settings, "approve", first.approval_id, "--as", "alice")
    assert one.exit_code == 0 and "1 of 2" in one.output, one.output
    twice = await cli(settings, "approve", first.approval_id, "--as", "alice")
    assert twice.exit_code == 1 and "same person does not count twice" in twice.output
    analyst = await cli(settings, "approve", first.approval_id, "--as", "ana")
    assert analyst.exit_code == 1 and "(analyst) may approve high risk" in analyst.output
    assert (await transfer(bus, tenant, "c3")).decision == "require_approval", "still one approval short"
    two = await cli(settings, "approve", first.approval_id, "--as", "bob")
    assert two.exit_code == 0 and "approved" in two.output
    assert (await transfer(bus, tenant, "c3")).code == "approved"
    votes = await logged_at_least(bus, tenant, ApprovalVoted, 2)
    assert [(v.user, v.approvals) for v in votes] == [("alice", 1), ("bob", 2)]


async def overdue(pool: asyncpg.Pool, approval_id: str) -> None:
    await pool.execute(
        "UPDATE policy.approvals SET expires_at = now() - interval '1 second' WHERE id = $1", approval_id
    )


async def test_timeout_denies_medium_risk(
    bus: Bus, pool: asyncpg.Pool, policy_service: ServiceContext, tenant: str
) -> None:
    first = await delete_record(bus, tenant, "c4")
    assert first.approval_id
    await overdue(pool, first.approval_id)

    async def expired() -> bool:
        return (await delete_record(bus, tenant, "c4")).code == "expired"

    await eventually(expired, timeout=10, every=0.2)
    assert [d.status for d in await logged_at_least(bus, tenant, ApprovalDecided, 1)] == ["expired"]
    assert any(a.kind == "approval_timeout" for a in await logged_at_least(bus, tenant, AlertRaised, 1))


async def test_timeout_escalates_high_risk_then_admins_decide(
    bus: Bus, settings: KernelSettings, pool: asyncpg.Pool, policy_service: ServiceContext, tenant: str
) -> None:
    first = await transfer(bus, tenant, "c5")
    assert first.approval_id
    await overdue(pool, first.approval_id)

    async def escalated() -> bool:
        return bool(await logged(bus, tenant, GoalEscalated))

    await eventually(escalated, timeout=10, every=0.2)
    escalation = (await logged(bus, tenant, GoalEscalated))[0]
    assert escalation.to == "admin" and first.approval_id in escalation.reason
    approver = await cli(settings, "approve", first.approval_id, "--as", "alice")
    assert approver.exit_code == 1 and "escalated to role 'admin'" in approver.output
    for admin in ("carol", "dave"):
        assert (await cli(settings, "approve", first.approval_id, "--as", admin)).exit_code == 0
    assert (await transfer(bus, tenant, "c5")).code == "approved"


async def test_takeover_answers_the_task_and_cancels_its_approvals(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tenant: str
) -> None:
    goal, task = unique("g"), unique("task")
    assigned = TaskAssigned(
        task_id=task,
        goal_id=goal,
        step_id="s1",
        attempt=1,
        agent="finance",
        capability="finance",
        instruction="pay",
        goal_text="pay the invoice",
    )
    await bus.publish(bus.new(assigned, tenant=tenant, correlationid=goal))
    waiting = await ask(
        bus,
        tenant,
        "finance",
        "tool_call",
        "delete_record",
        tool="delete_record",
        goal_id=goal,
        task_id=task,
        call_id="c6",
    )
    assert waiting.decision == "require_approval"
    answer: dict[str, Any] = {"answer": "paid by hand"}
    denied = await cli(settings, "takeover", task, "--as", "ana", "--answer", json.dumps(answer))
    assert denied.exit_code == 3 and "takeover denied" in denied.output  # 3: refused by governance
    result = await cli(settings, "takeover", task, "--as", "oscar", "--answer", json.dumps(answer))
    assert result.exit_code == 0, result.output
    done = [e for e in await logged_events(bus, tenant, TaskCompleted) if e.data.task_id == task]
    assert len(done) == 1 and done[0].principal == "user:oscar" and done[0].data.agent == "user:oscar"
    assert done[0].data.output == answer and done[0].correlationid == goal

    async def cancelled() -> bool:
        return (
            await ask(
                bus,
                tenant,
                "finance",
                "tool_call",
                "delete_record",
                tool="delete_record",
                goal_id=goal,
                task_id=task,
                call_id="c6",
            )
        ).code == "rejected"

    await eventually(cancelled, timeout=10, every=0.2)


async def test_an_agents_answer_in_a_humans_goal_is_not_a_takeover(
    bus: Bus, policy_service: ServiceContext, tenant: str
) -> None:
    """Events of a goal a human submitted carry ``user:<name>`` as principal, the agent's answer too: it
    neither rejects the task's pending approvals nor skips the low-confidence escalation."""
    goal, task = unique("g"), unique("task")
    waiting = await ask(
        bus,
        tenant,
        "finance",
        "tool_call",
        "delete_record",
        tool="delete_record",
        goal_id=goal,
        task_id=task,
        call_id="c7",
    )
    assert waiting.decision == "require_approval"
    done = TaskCompleted(
        task_id=task, goal_id=goal, step_id="s1", agent="finance", output={"answer": "not sure", "confidence": 0.1}
    )
    await bus.publish(bus.new(done, tenant=tenant, correlationid=goal, principal="user:oscar"))

    async def escalated() -> bool:
        return any(e.goal_id == goal for e in await logged(bus, tenant, GoalEscalated))

    await eventually(escalated, timeout=10, every=0.2)  # the completion was handled, as an agent's answer
    again = await ask(
        bus,
        tenant,
        "finance",
        "tool_call",
        "delete_record",
        tool="delete_record",
        goal_id=goal,
        task_id=task,
        call_id="c7",
    )
    assert again.decision == "require_approval" and again.approval_id == waiting.approval_id


def test_the_orchestrator_accepts_a_human_answer(bus: Bus) -> None:
    """The orchestrator's fold takes a takeover's task.completed (agent ``user:…``) as the step's output."""
    from agentos_orchestrator.decide import decide
    from agentos_orchestrator.state import World, apply
    from agentos_schemas.events import GoalCompleted, GoalPlanned, GoalSubmitted, PlanStep

    world, goal = World(), "g-takeover"
    step = PlanStep(step_id="pay", capability="finance", instruction="pay")
    task = TaskAssigned(
        task_id=f"{goal}/r0/pay/a1",
        goal_id=goal,
        step_id="pay",
        attempt=1,
        agent="finance",
        capability="finance",
        instruction="pay",
        goal_text="pay",
    )
    human = TaskCompleted(
        task_id=task.task_id, goal_id=goal, step_id="pay", agent="user:oscar", output={"answer": "paid by hand"}
    )
    for data in (
        GoalSubmitted(goal_id=goal, text="pay"),
        GoalPlanned(goal_id=goal, revision=0, steps=(step,), planner="workflow:x"),
        task,
        human,
    ):
        state = apply(world, bus.new(data, tenant="t", correlationid=goal, principal="user:oscar"))
    assert state is not None
    done = decide(world, state, now=state.submitted_at + 1)
    assert isinstance(done[0].data, GoalCompleted) and done[0].data.outputs == {"pay": {"answer": "paid by hand"}}
