"""Reading a recorded goal back from the log, and the offline-model scenario that answers every
model request of a replay as the recording says it was answered (``agentos audit replay``)."""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agentos_kernel import AgentOSError, Bus, InvalidInput
from agentos_kernel.llm import OFFLINE_ALIASES, ModelRegistry
from agentos_kernel.replay import replay
from agentos_schemas import Event
from agentos_schemas.events import (
    GoalFailed,
    GoalPlanned,
    GoalSubmitted,
    MemoryProposed,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
)
from agentos_schemas.events.policy import PolicyDecided
from agentos_schemas.subjects import parse_type

from agentos_cli.goals import goal_start_time


async def read_goal_events(
    bus: Bus, goal_id: str, tenant: str | None = None, *, timeout: float = 300.0, only: str = ">"
) -> list[Event[Any]]:
    """Every stored event of one goal (correlation id = ``goal_id``), in log order, read with the
    kernel's :func:`~agentos_kernel.replay.replay` from the goal's start when its id is a UUIDv7 (so
    a long log is not read from its beginning). ``tenant`` narrows the read to that tenant's
    subjects, ``only`` to the subjects after the tenant (``goal.submitted``, say)."""
    found: list[Event[Any]] = []

    def keep(event: Event[Any]) -> None:
        if event.correlationid == goal_id:
            found.append(event)

    await replay(bus, [f"agentos.{tenant or '*'}.{only}"], keep, timeout=timeout, since=goal_start_time(goal_id))
    return found


async def goal_exists(bus: Bus, goal_id: str) -> bool:
    """Whether the log holds the ``goal.submitted`` of ``goal_id``."""
    domain, name, _ = parse_type(GoalSubmitted.ce_type())
    submitted = await read_goal_events(bus, goal_id, only=f"{domain}.{name}", timeout=60.0)
    return any(isinstance(e.data, GoalSubmitted) and e.data.goal_id == goal_id for e in submitted)


def submitted_of(events: list[Event[Any]], goal_id: str) -> Event[GoalSubmitted]:
    for event in events:
        if isinstance(event.data, GoalSubmitted) and event.data.goal_id == goal_id:
            return event
    raise InvalidInput(f"goal {goal_id!r} has events in the log but no goal.submitted; it cannot be replayed")


def step_line(task: TaskAssigned) -> str:
    """The line of the task section that names the step, capability and attempt (see the
    context-manager's ``task_section``): it identifies one task attempt within a plan revision."""
    return f"Step: {task.step_id} (capability: {task.capability}, attempt {task.attempt})"


def _tool_arguments(decided: PolicyDecided, proposals: list[MemoryProposed]) -> dict[str, Any]:
    """A recorded tool call's arguments. The decision keeps them cut short (strings to 200
    characters, lists and objects as JSON text); a memory proposal keeps its content whole."""
    args = {k: v for k, v in decided.request.args.items() if not k.endswith("_domain")}
    if decided.request.tool == "propose_memory":
        prefix = str(args.get("content", "")).strip()
        for proposal in proposals:
            if prefix and proposal.content.startswith(prefix):
                return {"content": proposal.content, "tags": list(proposal.tags)}
    for key, value in list(args.items()):
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(ValueError):
                args[key] = json.loads(value)
    return args


@dataclass
class _Attempt:
    """What the recording says one task attempt's model answered, turn by turn."""

    agent: str
    line: str
    rounds: list[list[dict[str, Any]]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    """The answer to every later turn (a failed attempt's repeated behaviour), if any."""
    after_calls: int = 1


def _attempts(events: list[Event[Any]]) -> list[_Attempt]:
    assigned = [e.data for e in events if isinstance(e.data, TaskAssigned)]
    seen: set[str] = set()
    decided: dict[str, dict[int, list[PolicyDecided]]] = {}
    for e in events:
        d = e.data
        if isinstance(d, PolicyDecided) and d.request.tool and d.request.call_id not in seen:
            seen.add(d.request.call_id)
            prefix = f"{d.request.task_id}:"
            round_text = d.request.call_id[len(prefix) :].split(":", 1)[0]
            if d.request.call_id.startswith(prefix) and round_text.isdigit():
                decided.setdefault(d.request.task_id, {}).setdefault(int(round_text), []).append(d)
    proposals = [e.data for e in events if isinstance(e.data, MemoryProposed)]
    ends = {e.data.task_id: e.data for e in events if isinstance(e.data, TaskCompleted | TaskFailed)}
    out = []
    for task in assigned:
        attempt = _Attempt(agent=task.agent, line=step_line(task))
        mine = [p for p in proposals if p.task_id == task.task_id]
        for _, calls in sorted(decided.get(task.task_id, {}).items()):
            attempt.rounds.append([{"name": c.request.tool, "arguments": _tool_arguments(c, mine)} for c in calls])
        end = ends.get(task.task_id)
        if isinstance(end, TaskCompleted):
            attempt.final = {"json": end.output}
        elif isinstance(end, TaskFailed):
            attempt.after = _failure_answer(end, attempt.rounds)
            attempt.after_calls = max(1, len(end.usage.calls) - len(attempt.rounds))
        out.append(attempt)
    return out


def _failure_answer(end: TaskFailed, rounds: list[list[dict[str, Any]]]) -> dict[str, Any] | None:
    """How the model behaved after its recorded tool rounds in an attempt that failed."""
    if end.code == "invalid_output":
        return {"fault": "invalid_json"}
    if end.code == "model_unavailable" or (
        end.code == "unavailable" and end.reason.startswith("model provider unavailable")
    ):
        return {"fault": "server_error"}
    if end.code == "tool_loop" and rounds:
        return {"tool_calls": rounds[-1]}
    return None  # denials, budgets, halts: the sandbox's own policy decides those


class _Rules:
    """Scenario rules in the order they are added, each named by its position."""

    def __init__(self) -> None:
        self.rules: list[dict[str, Any]] = []

    def add(self, name: str, match: dict[str, Any], respond: dict[str, Any], times: int | None) -> None:
        rule: dict[str, Any] = {
            "name": f"{len(self.rules) + 1:03d} {name}",
            "match": match,
            "respond": {**respond, "template": False},
        }
        if times is not None:
            rule["times"] = times
        self.rules.append(rule)

    def planner(self, events: list[Event[Any]]) -> None:
        """The LLM planner's plans, one per revision, and a planner failure as it happened."""
        goal = next((e.data for e in events if isinstance(e.data, GoalSubmitted)), None)
        plans = sorted(
            (e.data for e in events if isinstance(e.data, GoalPlanned) and e.data.planner.startswith("llm:")),
            key=lambda p: p.revision,
        )
        for i, plan in enumerate(plans):
            steps = [s.model_dump(mode="json") for s in plan.steps]
            self.add(
                f"planner r{plan.revision}",
                {"agent": "planner", "turn": 1},
                {"json": {"steps": steps}},
                1 if i < len(plans) - 1 else None,
            )
        failed = next((e.data for e in events if isinstance(e.data, GoalFailed)), None)
        if goal is not None and goal.workflow is None and failed is not None and failed.code == "planner_failed":
            fault = "server_error" if "every model failed" in failed.reason else "invalid_json"
            self.add("planner failed", {"agent": "planner"}, {"fault": fault}, None)

    def attempt(self, a: _Attempt, last: bool) -> None:
        """One task attempt's turns; all but the last occurrence of its key answer only as often as
        they did."""
        key = {"agent": a.agent, "any_user_contains": a.line}
        label = f"{a.agent} {a.line.removeprefix('Step: ')}"
        for turn, calls in enumerate(a.rounds, start=1):
            self.add(f"{label} turn {turn}", {**key, "turn": turn}, {"tool_calls": calls}, None if last else 1)
        if a.final is not None:
            self.add(
                f"{label} turn {len(a.rounds) + 1}", {**key, "turn": len(a.rounds) + 1}, a.final, None if last else 1
            )
        if a.after is not None:
            self.add(f"{label} later turns", key, a.after, None if last else a.after_calls)


def recorded_scenario(events: list[Event[Any]], models: tuple[str, ...] = ()) -> dict[str, Any]:
    """An offline-model scenario that answers each request as the recording says it was answered.

    Rules are keyed by agent (the ``agent:`` line of the system prompt), the step line of the task
    (step, capability and attempt) and the model turn; the planner by its turn. A key that occurs
    more than once (the same step and attempt in a later plan revision) is answered in log order:
    every occurrence but the last is limited to the requests it answered. Answers are verbatim.
    """
    rules = _Rules()
    rules.planner(events)
    attempts = _attempts(events)
    remaining = Counter((a.agent, a.line) for a in attempts)
    for a in attempts:
        remaining[(a.agent, a.line)] -= 1
        rules.attempt(a, last=remaining[(a.agent, a.line)] == 0)
    names = {"offline-fast", "offline-smart", "offline-backup", *models}
    for e in events:
        usage = getattr(e.data, "usage", None)
        for call in getattr(usage, "calls", ()):
            names.add(call.model.split("/", 1)[-1])
    return {"models": sorted(names), "rules": rules.rules}


def configured_aliases() -> tuple[str, ...]:
    """Aliases of the configured model registry (``AGENTOS_MODELS``), which charters may name:
    the sandbox's offline model serves a model under each, so every alias resolves there."""
    if not os.environ.get("AGENTOS_MODELS"):
        return ()
    try:
        return tuple(a for a in ModelRegistry.load().aliases() if a not in OFFLINE_ALIASES)
    except AgentOSError:
        return ()
