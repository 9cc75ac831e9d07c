"""The decision point over NATS: allow, deny and approval for each action kind, every decision in
the log as ``policy.decided``, rate limits, loops, replan storms, spend spikes and escalations."""

from __future__ import annotations

from typing import Any

from agentos_kernel import Bus
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import eventually, unique
from agentos_schemas.events import GoalEscalated, GoalPlanned, PlanStep, TaskCompleted
from agentos_schemas.events.policy import AlertRaised, ApprovalRequested, PolicyDecided

from tests.policy.conftest import ask, logged, logged_at_least

CASES: list[tuple[str, str, str, dict[str, Any], str, str]] = [
    # action kind, agent, resource, extra fields, expected decision, expected code
    ("model_call", "cheap-only", "fast", {"args": {"fallbacks": "backup"}}, "allow", "ok"),
    ("model_call", "cheap-only", "smart", {}, "deny", "model"),
    ("model_call", "premium-user", "premium-large", {}, "require_approval", "risk"),
    ("tool_call", "support", "lookup_customer", {"tool": "lookup_customer"}, "allow", "ok"),
    ("tool_call", "support", "transfer_funds", {"tool": "transfer_funds"}, "deny", "not_allowed"),
    ("tool_call", "finance", "delete_record", {"tool": "delete_record"}, "require_approval", "risk"),
    ("memory_write", "keeper", "memory:episodic", {"tool": "propose_memory"}, "allow", "ok"),
    ("memory_write", "support", "memory:episodic", {"tool": "propose_memory"}, "deny", "not_allowed"),
    ("memory_write", "keeper", "memory:semantic", {"tool": "propose_semantic"}, "require_approval", "risk"),
    (
        "outside_action",
        "support",
        "email:outbound",
        {"tool": "send_email", "args": {"to": "a@example.com"}},
        "allow",
        "ok",
    ),
    ("outside_action", "injected", "bank:payments", {"tool": "transfer_funds"}, "deny", "not_allowed"),
    (
        "outside_action",
        "finance",
        "bank:payments",
        {"tool": "transfer_funds", "args": {"amount": "10"}},
        "require_approval",
        "risk",
    ),
]


async def test_each_action_kind_allows_denies_and_asks_for_approval(
    bus: Bus, policy_service: ServiceContext, tenant: str
) -> None:
    answers = []
    for n, (action, agent, resource, extra, decision, code) in enumerate(CASES):
        got = await ask(
            bus, tenant, agent, action, resource, goal_id=f"g{n}", task_id=f"t{n}", call_id=f"c{n}", **extra
        )
        answers.append(got)
        assert (got.decision, got.code) == (decision, code), (action, agent, resource, got.reasons)
        assert got.policy_version == "test-1" and got.reasons
        assert (got.approval_id is not None) == (decision == "require_approval")

    async def all_logged() -> bool:
        return len(await logged(bus, tenant, PolicyDecided)) == len(CASES)

    await eventually(all_logged, timeout=10)
    recorded = {d.decision_id: d for d in await logged(bus, tenant, PolicyDecided)}
    for got, case in zip(answers, CASES, strict=True):
        fact = recorded[got.decision_id]
        assert fact.decision == got.decision and fact.request.action == case[0] and fact.request.resource == case[2]
    requested = await logged(bus, tenant, ApprovalRequested)
    assert {a.approval_id for a in requested} == {a.approval_id for a in answers if a.approval_id}
    assert {a.needed for a in requested} == {1, 2}, "medium needs one approver, high two"


async def test_unknown_principal_and_human_grants(bus: Bus, policy_service: ServiceContext, tenant: str) -> None:
    assert (await ask(bus, tenant, "", "outside_action", "task:takeover", principal="user:oscar")).decision == "allow"
    analyst = await ask(bus, tenant, "", "outside_action", "task:takeover", principal="user:ana")
    assert analyst.decision == "deny" and "analyst" in analyst.reasons[0]
    stranger = await ask(bus, tenant, "", "outside_action", "task:takeover", principal="user:mallory")
    assert stranger.decision == "deny" and stranger.code == "not_allowed"


async def test_rate_limit_per_agent_and_tool(bus: Bus, policy_service: ServiceContext, tenant: str) -> None:
    codes = [
        (
            await ask(
                bus,
                tenant,
                "ratey",
                "tool_call",
                "search_documents",
                tool="search_documents",
                goal_id=f"g{n}",
                args={"query": str(n)},
            )
        ).code
        for n in range(5)
    ]
    assert codes == ["ok", "ok", "ok", "rate_limit", "rate_limit"]


async def test_same_call_repeated_is_a_loop_with_an_alert(
    bus: Bus, policy_service: ServiceContext, tenant: str
) -> None:
    same = {"tool": "search_documents", "args": {"query": "again"}, "goal_id": "g-loop", "task_id": "t-loop"}
    codes = [(await ask(bus, tenant, "research", "tool_call", "search_documents", **same)).code for _ in range(4)]
    assert codes == ["ok", "ok", "ok", "loop"]
    other = await ask(bus, tenant, "research", "tool_call", "search_documents", **{**same, "args": {"query": "new"}})
    assert other.decision == "allow", "a different call is not a loop"

    async def alerted() -> bool:
        return any(a.kind == "loop" and a.task_id == "t-loop" for a in await logged(bus, tenant, AlertRaised))

    await eventually(alerted, timeout=10)


async def test_replan_storm_denies_the_goal_and_alerts(bus: Bus, policy_service: ServiceContext, tenant: str) -> None:
    goal = unique("g")
    step = PlanStep(step_id="a", capability="research", instruction="x")
    for revision in range(4):
        await bus.publish(
            bus.new(
                GoalPlanned(goal_id=goal, revision=revision, steps=(step,), planner="llm:fast"),
                tenant=tenant,
                correlationid=goal,
            )
        )

    async def storm() -> bool:
        got = await ask(
            bus,
            tenant,
            "research",
            "tool_call",
            "search_documents",
            tool="search_documents",
            goal_id=goal,
            args={"query": "q"},
        )
        return got.code == "loop" and "replan storm" in got.reasons[0]

    await eventually(storm, timeout=10, every=0.1)
    alerts = await logged_at_least(bus, tenant, AlertRaised, 1)
    assert any(a.kind == "replan_storm" and a.goal_id == goal for a in alerts)


async def test_spend_spike_per_tenant(bus: Bus, policy_service: ServiceContext, tenant: str) -> None:
    first = await ask(bus, tenant, "spender", "model_call", "fast", estimated_cost_usd=0.7)
    second = await ask(bus, tenant, "spender", "model_call", "fast", estimated_cost_usd=0.7)
    assert first.decision == "allow" and (second.decision, second.code) == ("deny", "spend_spike")
    other = await ask(bus, unique("t"), "spender", "model_call", "fast", estimated_cost_usd=0.7)
    assert other.decision == "allow", "another tenant's spend is its own"


async def test_low_confidence_answer_escalates_the_goal(bus: Bus, policy_service: ServiceContext, tenant: str) -> None:
    goal = unique("g")
    for task, confidence in (("t-sure", 0.9), ("t-unsure", 0.2)):
        done = TaskCompleted(
            task_id=task, goal_id=goal, step_id="s", agent="research", output={"answer": "x", "confidence": confidence}
        )
        await bus.publish(bus.new(done, tenant=tenant, correlationid=goal))

    async def escalated() -> list[GoalEscalated]:
        return [e for e in await logged(bus, tenant, GoalEscalated) if e.goal_id == goal]

    async def found() -> bool:
        return bool(await escalated())

    await eventually(found, timeout=10)
    only = await escalated()
    assert len(only) == 1 and "t-unsure" in only[0].reason and only[0].to == "operator"
    assert f"agentos watch {goal}" in only[0].reason


async def test_sequence_rule_reads_the_recipient_and_cannot_be_spoofed(
    bus: Bus, policy_service: ServiceContext, tenant: str
) -> None:
    from agentos_kernel.policy import summarize_args

    goal = unique("g")
    read = await ask(bus, tenant, "support", "tool_call", "lookup_customer", tool="lookup_customer", goal_id=goal)
    assert read.decision == "allow"

    async def send(args: dict[str, Any]) -> str:
        return (
            await ask(
                bus,
                tenant,
                "support",
                "outside_action",
                "email:outbound",
                tool="send_email",
                goal_id=goal,
                args=summarize_args(args),
            )
        ).decision

    assert await send({"to": "desk@example.com"}) == "allow"
    assert await send({"to": "jo@elsewhere.net"}) == "require_approval"
    assert await send({"to": "jo@elsewhere.net", "to_domain": "example.com"}) == "require_approval", "spoofed"
    assert await send({"to": "[EMAIL]", "to_domain": "elsewhere.net"}) == "require_approval", "redacted in the log"
    assert await send({"to": "[EMAIL]", "to_domain": "example.com"}) == "allow"
