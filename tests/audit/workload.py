"""A seeded audit workload with known answers: one goal, three agents, model calls, personal data,
a policy-flavoured task failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentos_kernel import Bus
from agentos_schemas import Event
from agentos_schemas.events import (
    ContextManifest,
    ContextReady,
    GoalCompleted,
    GoalPlanned,
    GoalSubmitted,
    ModelCall,
    PlanStep,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    Usage,
)
from agentos_schemas.events.policy import PolicyDecided
from agentos_schemas.rpc import PolicyRequest

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

#: (agent, model) -> (calls, tokens, cost)
EXPECTED_COST = {
    ("research", "smart"): (1, 1200, 0.02),
    ("research", "backup"): (1, 350, 0.005),
    ("writer", "smart"): (1, 1000, 0.01),
    ("test", "fast"): (1, 100, 0.001),
}


@dataclass
class Workload:
    tenant: str
    goal_id: str
    events: list[Event[Any]] = field(default_factory=list)

    def of(self, name: str) -> list[Event[Any]]:
        return [e for e in self.events if e.type == f"dev.agentos.{name}.v1"]


def _assign(goal: str, task: str, step: str, agent: str) -> TaskAssigned:
    return TaskAssigned(
        task_id=task,
        goal_id=goal,
        step_id=step,
        attempt=1,
        agent=agent,
        capability=step,
        instruction=f"do {step}",
        goal_text="Audit workload",
    )


def _context(goal: str, task: str, agent: str, text: str, memory: tuple[str, ...]) -> ContextReady:
    manifest = ContextManifest(
        charter=f"{agent}@2",
        memory_ids=memory,
        memory_kinds={m: "semantic" for m in memory},
        tools=("web_search",) if agent == "research" else (),
        tokens={"system": 120, "task": 80, "total": 200 + 10 * len(memory)},
        budget_tokens=6000,
    )
    return ContextReady(
        task_id=task, goal_id=goal, agent=agent, messages=({"role": "user", "content": text},), manifest=manifest
    )


def _call(model: str, tin: int, tout: int, cost: float) -> ModelCall:
    return ModelCall(model=model, ok=True, input_tokens=tin, output_tokens=tout, cost_usd=cost, latency_ms=5.0)


def _decided(tenant: str, goal: str, task: str, agent: str, action: str, resource: str, allow: bool) -> PolicyDecided:
    request = PolicyRequest(
        tenant=tenant,
        principal=f"agent:{agent}",
        action=action,
        resource=resource,  # type: ignore[arg-type]
        agent=agent,
        goal_id=goal,
        task_id=task,
        tool=resource if action == "tool_call" else None,
    )
    return PolicyDecided(
        decision_id=f"d-{task}-{resource}",
        request=request,
        decision="allow" if allow else "deny",
        code="ok" if allow else "not_allowed",
        reasons=() if allow else (f"{resource} is not allowed",),
        policy_version="v7",
    )


def build(bus: Bus, tenant: str, goal_id: str) -> Workload:
    """The events, each caused by the one before it (so the trace is a chain under the goal)."""
    w = Workload(tenant, goal_id)
    t1, t2, t3 = f"{goal_id}/0/research/1", f"{goal_id}/0/write/1", f"{goal_id}/0/qa/1"
    payloads = [
        GoalSubmitted(goal_id=goal_id, text="Summarise the complaint from jane.doe@example.com"),
        GoalPlanned(
            goal_id=goal_id,
            revision=0,
            planner="llm:fast",
            steps=(PlanStep(step_id="research", capability="research", instruction="find"),),
            usage=Usage(calls=(_call("fast", 60, 40, 0.001),)),
        ),
        _assign(goal_id, t1, "research", "research"),
        _context(goal_id, t1, "research", "Call the customer at +1 415 555 0100", ("m1", "m2")),
        TaskStarted(task_id=t1, goal_id=goal_id, agent="research", instance="r-1"),
        _decided(tenant, goal_id, t1, "research", "model_call", "smart", True),
        TaskCompleted(
            task_id=t1,
            goal_id=goal_id,
            step_id="research",
            agent="research",
            output={"ok": True},
            usage=Usage(calls=(_call("smart", 1000, 200, 0.02), _call("backup", 300, 50, 0.005))),
        ),
        _assign(goal_id, t2, "write", "writer"),
        _context(goal_id, t2, "writer", "Write the summary", ("m3",)),
        _decided(tenant, goal_id, t2, "writer", "tool_call", "send_email", False),
        TaskCompleted(
            task_id=t2,
            goal_id=goal_id,
            step_id="write",
            agent="writer",
            output={"report": "done"},
            usage=Usage(calls=(_call("smart", 500, 500, 0.01),)),
        ),
        TaskFailed(
            task_id=t3,
            goal_id=goal_id,
            step_id="qa",
            agent="qa",
            reason="denied by policy: tool not allowed",
            retryable=False,
        ),
        GoalCompleted(goal_id=goal_id, result="done", cost_usd=0.036, tokens=2650),
    ]
    cause: Event[Any] | None = None
    for data in payloads:
        event = bus.new(data, tenant=tenant, cause=cause, correlationid=goal_id, subject=f"goal/{goal_id}")
        event.traceparent = TRACEPARENT
        w.events.append(event)
        cause = event
    return w
