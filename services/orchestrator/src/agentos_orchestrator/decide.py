"""What the orchestrator does next for a goal, decided from its state alone (pure; no I/O).

``decide`` is deterministic: the same state yields the same commands with the same event ids, so
re-deciding after a crash re-emits nothing new that was already published (JetStream drops the
duplicate ids) and misses nothing that was not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agentos_kernel.retry import Backoff
from agentos_schemas import derived_event_id
from agentos_schemas.events import (
    EventData,
    GoalCompleted,
    GoalEscalated,
    GoalFailed,
    GoalHeld,
    TaskAssigned,
    TaskReviewed,
)
from agentos_schemas.events.goals import FailureCode
from agentos_schemas.money import usd

from agentos_orchestrator import attest
from agentos_orchestrator.state import Goal, Step, World

REVIEW_CAPABILITY = "qa"
#: Task failures that end the whole goal instead of being retried or re-planned around.
GOAL_ENDING: dict[str, FailureCode] = {"budget": "budget", "halted": "halted"}


@dataclass(frozen=True)
class Emit:
    data: EventData
    id: str


@dataclass(frozen=True)
class NeedPlan:
    reason: str | None


Command = Emit | NeedPlan


#: The longest pause before a step that met an outage is tried again.
OUTAGE_BACKOFF_MAX_S = 30.0
_RETRY = Backoff(first_s=0.5, cap_s=10.0)
_OUTAGE = Backoff(first_s=0.5, cap_s=OUTAGE_BACKOFF_MAX_S)


def backoff(failures: int, *, key: str, outage: bool = False) -> float:
    """The pause before a step is tried again after ``failures`` (0.5 s doubling, up to 10 s, or
    30 s for an outage), jittered by ``key`` so that every replica, and a replay, decides alike."""
    return (_OUTAGE if outage else _RETRY).delay(max(failures - 1, 0), key=key)


def task_id(goal: Goal, step: Step, attempt: int) -> str:
    return f"{goal.goal_id}/r{goal.revision}/{step.spec.step_id}/a{attempt}"


def fail(goal: Goal, now: float, code: FailureCode, reason: str) -> list[Command]:
    return [
        Emit(
            GoalFailed(
                goal_id=goal.goal_id,
                code=code,
                reason=reason,
                cost_usd=goal.cost_usd,
                tokens=goal.tokens,
                duration_s=now - goal.submitted_at,
                steps_run=goal.attempts_total,
            ),
            derived_event_id(goal.goal_id, "failed"),
        )
    ]


def decide(world: World, goal: Goal, now: float, *, wait_timeout: float = 120.0) -> list[Command]:
    if not goal.active:
        return []
    limits = goal.limits
    if now - goal.submitted_at > limits.deadline_s:
        held = "; ".join(h.reason for h in goal.held.values())
        return fail(
            goal,
            now,
            "deadline",
            f"deadline of {limits.deadline_s:.0f}s passed" + (f" while held: {held}" if held else ""),
        )
    if goal.cost_usd > limits.budget_usd:
        return fail(goal, now, "budget", f"spent {usd(goal.cost_usd)} of a {usd(limits.budget_usd)} budget")
    if goal.status == "planning":
        if goal.capability and goal.capability not in world.agents.served():
            held = hold(world, goal, None, goal.capability, now)
            return [held] if held is not None else []
        return [NeedPlan(None)]
    if goal.steps and all(s.status == "accepted" for s in goal.steps.values()):
        return [complete(goal, now)]
    for step in goal.steps.values():
        if step.status == "failed" and step.failure_code in GOAL_ENDING:
            return fail(
                goal,
                now,
                GOAL_ENDING[step.failure_code],
                f"step {step.spec.step_id!r}: {step.last_error or step.failure_code}",
            )
    return _advance(world, goal, now, wait_timeout)


def _advance(world: World, goal: Goal, now: float, wait_timeout: float) -> list[Command]:
    out: list[Command] = []
    replan: list[str] = []
    planned = 0
    pending: dict[str, int] = {}
    for step in goal.steps.values():
        action = _step_action(goal, step, now)
        if action == "replan":
            replan.append(f"step {step.spec.step_id!r}: {step.last_error or step.feedback or 'failed'}")
        elif isinstance(action, Emit):
            out.append(action)
        elif action is not None:
            if goal.attempts_total - goal.paused_total + planned >= goal.limits.max_steps:
                return fail(goal, now, "max_steps", f"{goal.limits.max_steps} task attempts used")
            assigned = _assign(world, goal, step, action, now, wait_timeout, pending)
            if isinstance(assigned, Emit) and isinstance(assigned.data, TaskAssigned):
                planned += 1
                pending[assigned.data.agent] = pending.get(assigned.data.agent, 0) + 1
            if assigned is not None:
                out.append(assigned)
    if replan:
        if goal.replans >= goal.limits.max_replans:
            code: FailureCode = "max_replans" if goal.limits.max_replans else "max_retries"
            return fail(goal, now, code, "; ".join(replan) + f" (after {goal.replans} re-plans)")
        return [NeedPlan("; ".join(replan))]
    return out


def _step_action(goal: Goal, step: Step, now: float) -> str | Emit | None:
    """None (nothing to do), "work", "review", "replan", or an Emit (a review verdict)."""
    retries = goal.limits.max_retries
    if step.status == "reviewing":
        if step.review_done:
            return _verdict(goal, step)
        return "review" if step.review_task_id is None else None
    if step.status == "pending":
        if not all(goal.steps[d].status == "accepted" for d in step.spec.depends_on if d in goal.steps):
            return None
        return "work" if step.attempts_counted < 1 + retries else "replan"
    if step.status == "failed":
        if step.failure_code == "unavailable":  # an outage pauses the step: not an attempt spent
            pause = backoff(step.paused, key=f"{goal.goal_id}/{step.spec.step_id}", outage=True)
            return "work" if now >= (step.failed_at or 0) + pause else None
        if not step.retryable or step.attempts_counted >= 1 + retries:
            return "replan"
        pause = backoff(step.attempts_counted, key=f"{goal.goal_id}/{step.spec.step_id}")
        return "work" if now >= (step.failed_at or 0) + pause else None
    return None


def _verdict(goal: Goal, step: Step) -> Emit:
    output = step.review_output or {}
    verdict = output.get("verdict")
    accepted = verdict == "accepted"
    review_task = step.review_task_id
    # No review task: the record contradicted the output's claims (see attest), no model was asked.
    reviewer = attest.REVIEWER if review_task is None else goal.assigned_agent.get(review_task, "qa")
    event_id = (
        derived_event_id(step.task_id or "", "attested")
        if review_task is None
        else derived_event_id(review_task, "reviewed")
    )
    return Emit(
        TaskReviewed(
            goal_id=goal.goal_id,
            step_id=step.spec.step_id,
            task_id=step.task_id or "",
            verdict="accepted" if accepted else "rejected",
            feedback=str(output.get("feedback") or ("" if accepted else f"unusable verdict {verdict!r}")),
            reviewer=reviewer,
        ),
        event_id,
    )


def _assign(
    world: World, goal: Goal, step: Step, kind: str, now: float, wait_timeout: float, pending: dict[str, int]
) -> Emit | None:
    capability = REVIEW_CAPABILITY if kind == "review" else step.spec.capability
    agent = _pick_agent(world, capability, pending)
    if agent is None and capability not in world.agents.served():
        return hold(world, goal, step.spec.step_id, capability, now)  # never given to another agent
    if agent is None:
        since = world.wait(goal, step.spec.step_id, now)
        if now - since > wait_timeout and not goal.escalated:
            return Emit(
                GoalEscalated(
                    goal_id=goal.goal_id,
                    step_id=step.spec.step_id,
                    to="operator",
                    reason=f"no {capability!r} specialist available for {now - since:.0f}s",
                ),
                derived_event_id(goal.goal_id, "escalated", step.spec.step_id),
            )
        return None
    data = _task(goal, step, kind, agent, capability)
    return Emit(data, derived_event_id(data.task_id, "assigned"))


def _task(goal: Goal, step: Step, kind: str, agent: str, capability: str) -> TaskAssigned:
    """The task that gives ``agent`` the review of ``step`` (kind "review") or its next attempt."""
    spec = step.spec
    if kind == "review":
        return TaskAssigned(
            task_id=f"{step.task_id}/qa{step.reviews + 1}",
            goal_id=goal.goal_id,
            step_id=spec.step_id,
            attempt=step.reviews + 1,
            agent=agent,
            capability=capability,
            goal_text=goal.text,
            review_of=spec.step_id,
            instruction=f"Review the output of step {spec.step_id!r}. Its instruction was: {spec.instruction}",
            handoff={spec.step_id: step.output or {}},
        )
    attempt = step.attempt + 1
    return TaskAssigned(
        task_id=task_id(goal, step, attempt),
        goal_id=goal.goal_id,
        step_id=spec.step_id,
        attempt=attempt,
        agent=agent,
        capability=capability,
        instruction=spec.instruction,
        goal_text=goal.text,
        depends_on=spec.depends_on,
        feedback=step.feedback,
        handoff={d: goal.steps[d].output or {} for d in spec.depends_on if d in goal.steps},
    )


def hold(world: World, goal: Goal, step_id: str | None, capability: str, now: float) -> Emit | None:
    """Hold work whose capability no registered agent serves: stated once in the log (the
    ``goal.held`` to emit the first time, None after), then it waits (as a waiting goal, decided
    again when agents come and go) until an agent serves it."""
    world.wait(goal, step_id or "", now)
    if (step_id or "") in goal.held:
        return None
    served = tuple(sorted(world.agents.served()))
    what = f"step {step_id!r}" if step_id else "the goal"
    reason = (
        f"no agent serves capability {capability!r}: {what} is held until one is announced "
        f"(served: {', '.join(served) or 'none'})"
    )
    data = GoalHeld(goal_id=goal.goal_id, capability=capability, reason=reason, step_id=step_id, served=served)
    return Emit(data, derived_event_id(goal.goal_id, "held", step_id or "", capability, str(goal.revision)))


def _pick_agent(world: World, capability: str, pending: dict[str, int]) -> str | None:
    """The agent with the most free capacity for ``capability``; None if all are busy or absent."""
    best, free_best = None, 0
    for agent in world.agents.for_capability(capability):
        free = world.agents.capacity(agent) - world.inflight(agent) - pending.get(agent, 0)
        if free > free_best:
            best, free_best = agent, free
    return best


def complete(goal: Goal, now: float) -> Emit:
    outputs = {sid: s.output or {} for sid, s in goal.steps.items()}
    depended = {d for s in goal.steps.values() for d in s.spec.depends_on}
    finals = [sid for sid in goal.steps if sid not in depended]
    result = _result_text(outputs, finals)
    effects = {sid: s.effects for sid, s in goal.steps.items() if s.effects}
    return Emit(
        GoalCompleted(
            goal_id=goal.goal_id,
            result=result,
            outputs=outputs,
            effects=effects,
            cost_usd=goal.cost_usd,
            tokens=goal.tokens,
            duration_s=now - goal.submitted_at,
            steps_run=goal.attempts_total,
        ),
        derived_event_id(goal.goal_id, "completed"),
    )


def _result_text(outputs: dict[str, dict[str, Any]], finals: list[str]) -> str:
    for sid in finals:
        report = outputs[sid].get("report")
        if isinstance(report, str) and report:
            title = outputs[sid].get("title")
            return f"# {title}\n\n{report}" if isinstance(title, str) and title else report
    last = finals[-1] if finals else next(reversed(outputs), "")
    return json.dumps(outputs.get(last, {}), indent=2, ensure_ascii=False)
