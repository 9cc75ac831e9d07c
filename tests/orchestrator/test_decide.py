"""The orchestrator's decisions as pure functions of folded state: no broker needed."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agentos_orchestrator.decide import Emit, NeedPlan, backoff, decide
from agentos_orchestrator.state import World, apply
from agentos_schemas import Event
from agentos_schemas.charter import Charter
from agentos_schemas.events import (
    AgentAnnounced,
    EventData,
    GoalCompleted,
    GoalEscalated,
    GoalFailed,
    GoalHeld,
    GoalPlanned,
    GoalSubmitted,
    Limits,
    ModelCall,
    PlanStep,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    Usage,
)

T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def ev(data: EventData, at: float = 0.0) -> Event[Any]:
    return Event(data=data, source="test", type=data.ce_type(), tenant="acme", time=T0 + dt.timedelta(seconds=at))


def world_with(steps: list[PlanStep], limits: Limits | None = None, agents: dict[str, int] | None = None) -> World:
    world = World()
    for name, capacity in (agents if agents is not None else {"research": 2, "qa": 1}).items():
        charter = Charter(name=name, capabilities=(name,), model="fast")
        apply(
            world,
            ev(
                AgentAnnounced(
                    agent=name, version="1", capabilities=(name,), instance="i1", capacity=capacity, charter=charter
                )
            ),
        )
    apply(world, ev(GoalSubmitted(goal_id="g", text="goal", limits=limits or Limits())))
    apply(world, ev(GoalPlanned(goal_id="g", revision=0, steps=tuple(steps), planner="workflow:t")))
    return world


def emitted(commands: list[Any], cls: type[Any]) -> list[Any]:
    return [c.data for c in commands if isinstance(c, Emit) and isinstance(c.data, cls)]


def step(sid: str, *deps: str, review: bool = False) -> PlanStep:
    return PlanStep(step_id=sid, capability="research", instruction=f"do {sid}", depends_on=deps, review=review)


NOW = T0.timestamp()


def test_independent_steps_are_assigned_together_dependants_wait() -> None:
    world = world_with([step("a"), step("b"), step("c", "a", "b")])
    assigned = emitted(decide(world, world.goals["g"], NOW + 1), TaskAssigned)
    assert sorted(a.step_id for a in assigned) == ["a", "b"]


def test_capacity_is_respected_and_waiting_work_escalates_but_is_kept() -> None:
    world = world_with([step("a"), step("b"), step("c")], agents={"research": 2})
    goal = world.goals["g"]
    first = decide(world, goal, NOW + 1)
    assert len(emitted(first, TaskAssigned)) == 2, "only two slots"
    for c in first:
        apply(world, ev(c.data, 1))
    assert decide(world, goal, NOW + 2, wait_timeout=60) == []
    late = decide(world, goal, NOW + 100, wait_timeout=60)
    assert emitted(late, GoalEscalated), "waited too long: escalated"
    assert goal.steps["c"].status == "pending", "the step still waits; it never vanishes"


def test_work_no_registered_agent_serves_is_held_at_once_never_given_to_another() -> None:
    world = world_with(
        [step("a"), PlanStep(step_id="t", capability="triage", instruction="triage it")], agents={"research": 2}
    )
    goal = world.goals["g"]
    first = decide(world, goal, NOW + 1, wait_timeout=30)
    assert [a.step_id for a in emitted(first, TaskAssigned)] == ["a"], "triage work never goes to research"
    [held] = emitted(first, GoalHeld)
    assert (held.step_id, held.capability, held.served) == ("t", "triage", ("research",))
    assert held.reason.startswith("no agent serves capability 'triage'")
    for c in first:
        apply(world, ev(c.data, 1))
    assert decide(world, goal, NOW + 2, wait_timeout=30) == [], "held once, then it waits"
    assert not emitted(decide(world, goal, NOW + 400, wait_timeout=30), GoalEscalated | TaskAssigned)
    announce(world, "triage")
    assert [a.agent for a in emitted(decide(world, goal, NOW + 401), TaskAssigned)] == ["triage"]


def test_a_goal_whose_intent_no_agent_serves_is_held_before_planning() -> None:
    world = World()
    announce(world, "research")
    apply(world, ev(GoalSubmitted(goal_id="g", text="Triage ticket #1", capability="triage")))
    goal = world.goals["g"]
    [held] = emitted(decide(world, goal, NOW + 1), GoalHeld)
    assert held.step_id is None and "no agent serves capability 'triage'" in held.reason
    apply(world, ev(held, 1))
    assert decide(world, goal, NOW + 2) == [], "held, not planned onto another capability"
    announce(world, "triage")
    assert decide(world, goal, NOW + 3) == [NeedPlan(None)]


def announce(world: World, name: str) -> None:
    charter = Charter(name=name, capabilities=(name,), model="fast")
    apply(
        world,
        ev(AgentAnnounced(agent=name, version="1", capabilities=(name,), instance="i1", capacity=1, charter=charter)),
    )


def test_same_state_gives_the_same_commands_with_the_same_ids() -> None:
    world = world_with([step("a"), step("b")])
    once = decide(world, world.goals["g"], NOW + 1)
    again = decide(world, world.goals["g"], NOW + 1)
    assert [c.id for c in once] == [c.id for c in again]


def run_attempt(world: World, sid: str, attempt: int, *, ok: bool, at: float, cost: float = 0.0) -> None:
    tid = f"g/r{world.goals['g'].revision}/{sid}/a{attempt}"
    apply(
        world,
        ev(
            TaskAssigned(
                task_id=tid,
                goal_id="g",
                step_id=sid,
                attempt=attempt,
                agent="research",
                capability="research",
                instruction="x",
                goal_text="goal",
            ),
            at,
        ),
    )
    usage = Usage(calls=(ModelCall(model="m", ok=True, cost_usd=cost, input_tokens=10),))
    if ok:
        apply(
            world,
            ev(
                TaskCompleted(task_id=tid, goal_id="g", step_id=sid, agent="research", output={"k": 1}, usage=usage), at
            ),
        )
    else:
        apply(
            world,
            ev(TaskFailed(task_id=tid, goal_id="g", step_id=sid, agent="research", reason="boom", usage=usage), at),
        )


def test_failures_retry_with_backoff_then_replan_then_fail() -> None:
    world = world_with([step("a")], Limits(max_retries=1, max_replans=1))
    goal = world.goals["g"]
    run_attempt(world, "a", 1, ok=False, at=1)
    assert decide(world, goal, NOW + 1.1) == [], "backing off"
    retry = emitted(decide(world, goal, NOW + 2), TaskAssigned)
    assert [a.attempt for a in retry] == [2]
    run_attempt(world, "a", 2, ok=False, at=3)
    replan = decide(world, goal, NOW + 10)
    assert isinstance(replan[0], NeedPlan) and "boom" in (replan[0].reason or "")
    apply(world, ev(GoalPlanned(goal_id="g", revision=1, steps=(step("a"),), planner="workflow:t", reason="x"), 11))
    run_attempt(world, "a", 1, ok=False, at=12)
    run_attempt(world, "a", 2, ok=False, at=14)
    failed = emitted(decide(world, goal, NOW + 20), GoalFailed)
    assert failed and failed[0].code == "max_replans"


def test_deadline_budget_and_step_limits_end_the_goal() -> None:
    world = world_with([step("a")], Limits(deadline_s=30))
    assert emitted(decide(world, world.goals["g"], NOW + 31), GoalFailed)[0].code == "deadline"
    world = world_with([step("a"), step("b", "a")], Limits(budget_usd=0.01))
    run_attempt(world, "a", 1, ok=True, at=1, cost=0.02)
    assert emitted(decide(world, world.goals["g"], NOW + 2), GoalFailed)[0].code == "budget"
    world = world_with([step("a"), step("b"), step("c")], Limits(max_steps=2))
    assert emitted(decide(world, world.goals["g"], NOW + 1), GoalFailed)[0].code == "max_steps"


def test_review_gate_and_completion() -> None:
    world = world_with([step("a", review=True)])
    goal = world.goals["g"]
    run_attempt(world, "a", 1, ok=True, at=1)
    review = emitted(decide(world, goal, NOW + 2), TaskAssigned)
    assert review[0].review_of == "a" and review[0].capability == "qa"
    apply(world, ev(review[0], 2))
    apply(
        world,
        ev(
            TaskCompleted(
                task_id=review[0].task_id,
                goal_id="g",
                step_id="a",
                agent="qa",
                output={"verdict": "accepted", "feedback": "ok"},
            ),
            3,
        ),
    )
    verdict = decide(world, goal, NOW + 3)
    for c in verdict:
        apply(world, ev(c.data, 3))
    done = emitted(decide(world, goal, NOW + 4), GoalCompleted)
    assert done and done[0].outputs == {"a": {"k": 1}}


def test_an_outage_pauses_a_step_without_spending_its_retries_or_the_goals_steps() -> None:
    """Failures with code ``unavailable`` (the policy or its store could not decide) are retried with
    a growing backoff, however many there are, and count neither as retries nor as steps; a real
    failure afterwards still finds the step's whole retry budget."""
    world = world_with([step("a")], limits=Limits(max_retries=1, max_replans=0, max_steps=3))
    goal = world.goals["g"]
    at = 1.0
    for n in range(1, 6):  # five outage failures: more than max_retries and max_steps allow
        [assigned] = emitted(decide(world, goal, NOW + at), TaskAssigned)
        assert assigned.attempt == n
        apply(world, ev(assigned, at))
        apply(
            world,
            ev(
                TaskFailed(
                    task_id=assigned.task_id,
                    goal_id="g",
                    step_id="a",
                    agent="research",
                    reason="policy denied the model call (unavailable): policy store (Postgres) "
                    "unavailable (ConnectionRefusedError)",
                    code="unavailable",
                ),
                at,
            ),
        )
        pause = backoff(n, key="g/a", outage=True)
        assert min(0.5 * 2 ** (n - 1), 30.0) * 0.8 <= pause <= min(0.5 * 2 ** (n - 1), 30.0), "capped, jittered"
        assert decide(world, goal, NOW + at + pause - 0.01) == [], "backing off"
        at += pause + 0.001  # event times are kept to the microsecond
    assert goal.steps["a"].attempts_counted == 0 and goal.replans == 0
    [assigned] = emitted(decide(world, goal, NOW + at), TaskAssigned)
    apply(world, ev(assigned, at))
    apply(
        world,
        ev(
            TaskFailed(
                task_id=assigned.task_id,
                goal_id="g",
                step_id="a",
                agent="research",
                reason="tool loop exceeded",
                code="tool_loop",
            ),
            at,
        ),
    )
    [retried] = emitted(decide(world, goal, NOW + at + 1), TaskAssigned)  # the one retry is still there
    apply(world, ev(retried, at + 1))
    apply(
        world,
        ev(
            TaskFailed(
                task_id=retried.task_id,
                goal_id="g",
                step_id="a",
                agent="research",
                reason="tool loop exceeded",
                code="tool_loop",
            ),
            at + 1,
        ),
    )
    [failed] = emitted(decide(world, goal, NOW + at + 3), GoalFailed)
    assert failed.code == "max_retries"
