"""The orchestrator's indexes (waiting goals, tasks in flight per agent) stay equal to a full
recomputation over the goals, whatever sequence of events and decisions folds into the state."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from agentos_orchestrator.decide import Emit, decide
from agentos_orchestrator.state import World, _busy_agent, apply
from agentos_schemas import Event
from agentos_schemas.charter import Charter
from agentos_schemas.events import (
    AgentAnnounced,
    AgentRetired,
    EventData,
    GoalCompleted,
    GoalFailed,
    GoalHeld,
    GoalPlanned,
    GoalSubmitted,
    Limits,
    PlanStep,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
GOALS = ("g1", "g2", "g3")
AGENTS = ("research", "qa")


def ev(data: EventData, at: float) -> Event[Any]:
    return Event(data=data, source="test", type=data.ce_type(), tenant="acme", time=T0 + dt.timedelta(seconds=at))


def plan(goal_id: str, revision: int, review: bool) -> GoalPlanned:
    steps = (
        PlanStep(step_id="a", capability="research", instruction="a", review=review),
        PlanStep(step_id="b", capability="research", instruction="b"),
        PlanStep(step_id="c", capability="research", instruction="c", depends_on=("a", "b")),
    )
    return GoalPlanned(goal_id=goal_id, revision=revision, steps=steps, planner="workflow:t")


def recomputed_busy(world: World) -> Counter[str]:
    busy: Counter[str] = Counter()
    for goal in world.goals.values():
        if goal.active:
            for step in goal.steps.values():
                agent = _busy_agent(goal, step)
                if agent is not None:
                    busy[agent] += 1
    return busy


def recomputed_waiting(world: World) -> set[str]:
    return {g.goal_id for g in world.goals.values() if g.active and g.waiting_since}


def check(world: World) -> None:
    assert +world.busy == recomputed_busy(world)
    for agent in AGENTS:
        assert world.inflight(agent) == recomputed_busy(world)[agent]
    assert set(world.waiting) == recomputed_waiting(world)
    assert set(world.goal_busy) <= set(world.goals)


# One move: (kind, goal index, a small number used to pick a task, a capacity or a revision).
# Deciding and announcing capacity are weighted up: they make steps wait and then get assigned.
KINDS = [
    "submit",
    "plan",
    "decide",
    "decide",
    "decide",
    "start",
    "complete",
    "complete",
    "fail",
    "fail-final",
    "announce",
    "announce",
    "retire",
    "end",
    "duplicate",
]
moves = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, len(GOALS) - 1), st.integers(0, 7), st.integers(0, 3)),
    min_size=1,
    max_size=80,
)


def task_fact(kind: str, goal: Any, task: str, pick: int) -> EventData:
    """What the specialist reports of ``task``: started, completed (accepted or not) or failed."""
    step_id = goal.tasks[task][0]
    if kind == "start":
        return TaskStarted(task_id=task, goal_id=goal.goal_id, agent="research", instance="i0")
    if kind == "complete":
        verdict = "accepted" if pick % 3 else "rejected"
        return TaskCompleted(
            task_id=task,
            goal_id=goal.goal_id,
            step_id=step_id,
            agent="research",
            output={"answer": "x", "verdict": verdict, "feedback": "more"},
        )
    return TaskFailed(
        task_id=task,
        goal_id=goal.goal_id,
        step_id=step_id,
        agent="research",
        reason="broke",
        retryable=kind == "fail",
        code="error",
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(moves)
def test_indexes_equal_a_full_recomputation(script: list[tuple[str, int, int, int]]) -> None:
    world = World()
    applied: list[Event[Any]] = []
    now = 0.0

    def fold(data: EventData) -> None:
        event = ev(data, now)
        apply(world, event)
        applied.append(event)

    for kind, gi, pick, n in script:
        now += 1.0
        goal_id = GOALS[gi]
        goal = world.goals.get(goal_id)
        outstanding = sorted(t for t in (goal.tasks if goal else {}) if t not in goal.finished_tasks) if goal else []
        task = outstanding[pick % len(outstanding)] if outstanding else None
        if kind == "submit":
            fold(GoalSubmitted(goal_id=goal_id, text="goal", limits=Limits(max_steps=40, max_replans=5)))
        elif kind == "plan" and goal is not None:
            fold(plan(goal_id, goal.revision + 1 + n % 2, review=pick % 2 == 0))
        elif kind == "decide" and goal is not None:
            for command in decide(world, goal, T0.timestamp() + now, wait_timeout=5.0):
                if isinstance(command, Emit):  # as the service does: fold its own decisions at once
                    fold(command.data)
        elif kind in ("start", "complete", "fail", "fail-final") and goal is not None and task is not None:
            fold(task_fact(kind, goal, task, pick))
        elif kind == "announce":
            agent = AGENTS[pick % 2]
            charter = Charter(name=agent, capabilities=(agent,), model="fast")
            fold(
                AgentAnnounced(
                    agent=agent,
                    version="1",
                    capabilities=(agent,),
                    instance=f"i{n % 2}",
                    capacity=1 + n,
                    charter=charter,
                )
            )
        elif kind == "retire":
            fold(AgentRetired(agent=AGENTS[pick % 2], instance=f"i{n % 2}"))
        elif kind == "end" and goal is not None:
            fold(
                GoalCompleted(goal_id=goal_id, result="done")
                if pick % 2
                else GoalFailed(goal_id=goal_id, code="deadline", reason="late")
            )
        elif kind == "duplicate" and applied:
            apply(world, applied[pick % len(applied)])  # a redelivery changes nothing
        check(world)

    # Replaying the same log into a fresh state rebuilds the same indexes.
    rebuilt = World()
    for event in applied:
        apply(rebuilt, event)
    assert +rebuilt.busy == +world.busy


def test_a_goal_leaves_the_waiting_index_when_its_step_is_assigned() -> None:
    world = World()
    apply(world, ev(GoalSubmitted(goal_id="g1", text="goal"), 0))
    apply(world, ev(plan("g1", 0, review=False), 0))
    goal = world.goals["g1"]
    held = decide(world, goal, T0.timestamp() + 1)  # no agent registered yet: both steps held
    assert {type(c.data) for c in held if isinstance(c, Emit)} == {GoalHeld} and list(world.waiting) == ["g1"]
    for command in held:
        apply(world, ev(command.data, 1))  # type: ignore[union-attr]
    charter = Charter(name="research", capabilities=("research",), model="fast")
    apply(
        world,
        ev(
            AgentAnnounced(
                agent="research", version="1", capabilities=("research",), instance="i1", capacity=1, charter=charter
            ),
            2,
        ),
    )
    for command in decide(world, goal, T0.timestamp() + 3):
        apply(world, ev(command.data, 3))  # type: ignore[union-attr]
    assert world.inflight("research") == 1 and list(world.waiting) == ["g1"]  # step b still waits
    done = next(iter(goal.tasks))
    apply(
        world,
        ev(
            TaskCompleted(
                task_id=done, goal_id="g1", step_id=goal.tasks[done][0], agent="research", output={"answer": "x"}
            ),
            4,
        ),
    )
    assert world.inflight("research") == 0
    for command in decide(world, goal, T0.timestamp() + 5):
        apply(world, ev(command.data, 5))  # type: ignore[union-attr]
    assert world.inflight("research") == 1 and not world.waiting
    check(world)
    apply(world, ev(GoalFailed(goal_id="g1", code="deadline", reason="late"), 6))
    assert not world.busy and not world.goal_busy and not world.goals
