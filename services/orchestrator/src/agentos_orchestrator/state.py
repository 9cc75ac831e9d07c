"""Workflow state, folded from events (pure; no I/O).

``apply`` folds one event into the state of its goal. It is idempotent: applying an event the
state already reflects changes nothing, so a restarted orchestrator can replay the log and then
take live deliveries that overlap it.

Indexes kept by the fold, so that no event costs time in proportion to the number of goals:
``World.goals`` holds only active goals (an ended goal leaves it), ``World.waiting`` the active
goals with a step waiting for a free specialist (in the order they started waiting), and
``World.busy`` the tasks in flight per agent. ``apply`` updates ``busy`` from the one goal an
event concerns (a cost in the size of that goal) and ``waiting`` when a waiting step is assigned
or its goal ends; ``decide`` marks a goal waiting through :meth:`World.wait`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from agentos_schemas import Event
from agentos_schemas.events import (
    AgentAnnounced,
    AgentRetired,
    Effect,
    GoalCompleted,
    GoalEscalated,
    GoalFailed,
    GoalHeld,
    GoalPlanned,
    GoalSubmitted,
    Limits,
    PlanStep,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    TaskReviewed,
    TaskStarted,
    Usage,
)

from agentos_orchestrator import attest

StepStatus = Literal["pending", "assigned", "running", "reviewing", "accepted", "failed"]


@dataclass
class Step:
    spec: PlanStep
    status: StepStatus = "pending"
    attempt: int = 0
    """Attempts started in the current plan revision (work attempts, not reviews)."""
    task_id: str | None = None
    review_task_id: str | None = None
    review_done: bool = False
    reviews: int = 0
    output: dict[str, Any] | None = None
    effects: tuple[Effect, ...] = ()
    """What the current attempt's writes really did (from its ``task.completed``)."""
    feedback: str | None = None
    review_output: dict[str, Any] | None = None
    failed_at: float | None = None
    last_error: str | None = None
    retryable: bool = True
    failure_code: str = "error"
    paused: int = 0
    """Attempts that failed only because a dependency was unavailable (code ``unavailable``):
    retried with backoff, not counted against the step's retries."""

    @property
    def attempts_counted(self) -> int:
        """Attempts that count against ``max_retries``."""
        return self.attempt - self.paused


@dataclass
class Goal:
    goal_id: str
    tenant: str
    text: str
    workflow: str | None
    limits: Limits
    submitted_at: float
    principal: str | None
    submitted_event: Event[Any]
    status: Literal["planning", "running", "completed", "failed"] = "planning"
    revision: int = -1
    steps: dict[str, Step] = field(default_factory=lambda: {})
    tasks: dict[str, tuple[str, Literal["work", "review"]]] = field(default_factory=lambda: {})
    finished_tasks: set[str] = field(default_factory=lambda: set())
    attempts_total: int = 0
    paused_total: int = 0
    """Attempts of any step that failed only because a dependency was unavailable (not counted
    against ``max_steps``)."""
    replans: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    history: list[str] = field(default_factory=lambda: [])
    """What went wrong so far, for the planner when it re-plans."""
    escalated: bool = False
    capability: str | None = None
    """The capability the goal's intent needs (``goal.submitted``), if it names one."""
    held: dict[str, GoalHeld] = field(default_factory=lambda: {})
    """Work held because no registered agent serves its capability, by step id ("" for the
    goal's intent before it is planned); an entry leaves when the work is planned or assigned."""
    waiting_since: dict[str, float] = field(default_factory=lambda: {})
    assigned_agent: dict[str, str] = field(default_factory=lambda: {})

    @property
    def active(self) -> bool:
        return self.status in ("planning", "running")


@dataclass
class Agents:
    """Announced specialists: capabilities and capacity per agent, from ``agent.announced``."""

    capabilities: dict[str, tuple[str, ...]] = field(default_factory=lambda: {})
    instances: dict[str, dict[str, int]] = field(default_factory=lambda: {})

    def capacity(self, agent: str) -> int:
        return sum(self.instances.get(agent, {}).values())

    def for_capability(self, capability: str) -> list[str]:
        return sorted(a for a, caps in self.capabilities.items() if capability in caps and self.capacity(a) > 0)

    def served(self) -> set[str]:
        """The capabilities of every agent with a replica up (announced and not retired)."""
        return {c for a, caps in self.capabilities.items() if self.capacity(a) > 0 for c in caps}


@dataclass
class World:
    goals: dict[str, Goal] = field(default_factory=lambda: {})
    """Goals still planning or running; a goal leaves when it completes or fails."""
    finished: set[str] = field(default_factory=lambda: set())
    """Ids of goals that ended, so late or replayed events about them are ignored."""
    agents: Agents = field(default_factory=Agents)
    waiting: dict[str, None] = field(default_factory=lambda: {})
    """Ids of active goals with a step waiting for a free specialist (an ordered set: oldest first)."""
    busy: Counter[str] = field(default_factory=lambda: Counter())
    """Tasks in flight per agent (assigned and not finished), across every active goal."""
    goal_busy: dict[str, Counter[str]] = field(default_factory=lambda: {})
    """Each active goal's share of ``busy``, so one event updates ``busy`` from its goal alone."""

    def inflight(self, agent: str) -> int:
        """Tasks assigned to ``agent`` and not yet finished, across every goal."""
        return self.busy.get(agent, 0)

    def wait(self, goal: Goal, step_id: str, now: float) -> float:
        """Mark ``step_id`` of ``goal`` as waiting for a specialist since ``now`` (kept if already
        waiting); returns since when it waits."""
        since = goal.waiting_since.setdefault(step_id, now)
        if goal.goal_id in self.goals:
            self.waiting.setdefault(goal.goal_id, None)
        return since

    def recount(self, goal: Goal) -> None:
        """Bring ``busy`` up to date with ``goal`` (after an event changed it; :func:`apply` does)."""
        old: Counter[str] = self.goal_busy.get(goal.goal_id) or Counter()
        new: Counter[str] = goal_busy(goal) if goal.active else Counter()
        if new == old:
            return
        self.busy.update(new)
        self.busy.subtract(old)
        for agent in {*old, *new}:
            if self.busy[agent] <= 0:
                del self.busy[agent]
        if new:
            self.goal_busy[goal.goal_id] = new
        else:
            self.goal_busy.pop(goal.goal_id, None)


def goal_busy(goal: Goal) -> Counter[str]:
    """The tasks of ``goal`` in flight, per agent (what a full recomputation of ``busy`` sums)."""
    found: Counter[str] = Counter()
    for step in goal.steps.values():
        agent = _busy_agent(goal, step)
        if agent is not None:
            found[agent] += 1
    return found


def _busy_agent(goal: Goal, step: Step) -> str | None:
    task = step.review_task_id if step.status == "reviewing" and not step.review_done else step.task_id
    if task is None or task in goal.finished_tasks or step.status not in ("assigned", "running", "reviewing"):
        return None
    return goal.assigned_agent.get(task)


def ts(event: Event[Any]) -> float:
    return (event.time or dt.datetime.now(dt.UTC)).timestamp()


def apply(world: World, event: Event[Any]) -> Goal | None:
    """Fold ``event`` into ``world``; returns the goal it concerned, if any."""
    data = event.data
    if isinstance(data, AgentAnnounced):
        world.agents.capabilities[data.agent] = data.capabilities
        world.agents.instances.setdefault(data.agent, {})[data.instance] = data.capacity
        return None
    if isinstance(data, AgentRetired):
        world.agents.instances.get(data.agent, {}).pop(data.instance, None)
        return None
    if isinstance(data, GoalSubmitted):
        if data.goal_id in world.finished:
            return None
        if data.goal_id not in world.goals:
            world.goals[data.goal_id] = Goal(
                goal_id=data.goal_id,
                tenant=event.tenant,
                text=data.text,
                workflow=data.workflow,
                limits=data.limits,
                submitted_at=ts(event),
                principal=event.principal,
                submitted_event=event,
                capability=data.capability,
            )
        return world.goals[data.goal_id]
    goal = world.goals.get(getattr(data, "goal_id", ""))
    if goal is None:
        return None
    _apply_to_goal(world, goal, event)
    world.recount(goal)
    if not goal.waiting_since:
        world.waiting.pop(goal.goal_id, None)
    if not goal.active:
        del world.goals[goal.goal_id]
        world.waiting.pop(goal.goal_id, None)
        world.finished.add(goal.goal_id)
    return goal


def _apply_to_goal(world: World, goal: Goal, event: Event[Any]) -> None:
    data = event.data
    if isinstance(data, GoalPlanned):
        _apply_plan(goal, data)
    elif isinstance(data, TaskAssigned):
        _apply_assigned(world, goal, data)
    elif isinstance(data, TaskStarted):
        step = _work_step(goal, data.task_id)
        if step and step.status == "assigned":
            step.status = "running"
    elif isinstance(data, TaskCompleted | TaskFailed):
        if data.task_id not in goal.finished_tasks:
            goal.finished_tasks.add(data.task_id)
            _charge(goal, data.usage)
            if isinstance(data, TaskCompleted):
                _apply_completed(goal, data, ts(event))
            else:
                _apply_failed(goal, data, ts(event))
    elif isinstance(data, TaskReviewed):
        _apply_reviewed(goal, data)
    elif isinstance(data, GoalCompleted):
        goal.status = "completed"
    elif isinstance(data, GoalFailed):
        goal.status = "failed"
    elif isinstance(data, GoalEscalated):
        goal.escalated = True
    elif isinstance(data, GoalHeld):
        goal.held.setdefault(data.step_id or "", data)


def _charge(goal: Goal, usage: Usage) -> None:
    goal.cost_usd += usage.cost_usd
    goal.tokens += usage.tokens


def _apply_plan(goal: Goal, data: GoalPlanned) -> None:
    if data.revision <= goal.revision:
        return
    old = goal.steps
    goal.revision = data.revision
    goal.steps = {}
    for spec in data.steps:
        kept = old.get(spec.step_id)
        if kept and kept.status == "accepted" and kept.spec == spec:
            goal.steps[spec.step_id] = kept
        else:
            goal.steps[spec.step_id] = Step(spec=spec)
    # Steps the new plan dropped no longer wait (kept ones keep waiting since when they did).
    goal.waiting_since = {sid: t for sid, t in goal.waiting_since.items() if sid in goal.steps}
    goal.held = {sid: h for sid, h in goal.held.items() if sid in goal.steps}  # the intent was planned
    if data.revision > 0:
        goal.replans += 1
    _charge(goal, data.usage)
    goal.status = "running"


def _apply_assigned(world: World, goal: Goal, data: TaskAssigned) -> None:
    if data.task_id in goal.tasks:
        return
    step = goal.steps.get(data.step_id)
    if step is None:
        return
    goal.attempts_total += 1
    goal.assigned_agent[data.task_id] = data.agent
    goal.waiting_since.pop(data.step_id, None)
    goal.held.pop(data.step_id, None)
    if data.review_of is not None:
        goal.tasks[data.task_id] = (data.step_id, "review")
        step.reviews += 1
        step.review_task_id = data.task_id
        step.review_done = False
    else:
        goal.tasks[data.task_id] = (data.step_id, "work")
        step.task_id = data.task_id
        step.attempt = data.attempt
        step.status = "assigned"


def _work_step(goal: Goal, task_id: str) -> Step | None:
    entry = goal.tasks.get(task_id)
    if entry is None or entry[1] != "work":
        return None
    step = goal.steps.get(entry[0])
    return step if step is not None and step.task_id == task_id else None


def _apply_completed(goal: Goal, data: TaskCompleted, at: float) -> None:
    entry = goal.tasks.get(data.task_id)
    if entry is None:
        return
    step = goal.steps.get(entry[0])
    if step is None:
        return
    if entry[1] == "review":
        if step.review_task_id == data.task_id:
            step.review_output = data.output
            step.review_done = True
        return
    if step.task_id != data.task_id:
        return
    step.output = data.output
    step.effects = data.effects
    step.status = "reviewing" if step.spec.review else "accepted"
    step.review_task_id = None
    step.review_done = False
    problems = attest.check(data.output, data.claims, data.effects)
    if problems:  # rejected at once, by the record, whatever a QA model would say
        step.status = "reviewing"
        step.review_done = True
        step.review_output = {"verdict": "rejected", "feedback": attest.feedback(problems)}


def _apply_failed(goal: Goal, data: TaskFailed, at: float) -> None:
    entry = goal.tasks.get(data.task_id)
    step = goal.steps.get(entry[0]) if entry else None
    if step is None or entry is None:
        return
    goal.history.append(f"step {step.spec.step_id!r} failed ({entry[1]}): {data.reason}")
    if entry[1] == "review":
        step.review_task_id = None  # review is simply asked again
        step.review_done = False
        return
    if step.task_id == data.task_id:
        step.status = "failed"
        step.failed_at = at
        step.last_error = data.reason
        step.retryable = data.retryable
        step.failure_code = data.code
        if data.code == "unavailable":
            step.paused += 1
            goal.paused_total += 1


def _apply_reviewed(goal: Goal, data: TaskReviewed) -> None:
    step = goal.steps.get(data.step_id)
    if step is None or step.task_id != data.task_id or step.status != "reviewing":
        return
    if data.verdict == "accepted":
        step.status = "accepted"
    else:
        goal.history.append(f"QA rejected step {data.step_id!r}: {data.feedback}")
        step.status = "pending"
        step.feedback = data.feedback
    step.review_task_id = None
    step.review_done = False
