"""What the MCP tools answer: one pydantic model per result, so each tool declares its
``outputSchema`` and its ``structuredContent`` is validated against it (by the SDK, on the way out).

The fields are those of the gateway's JSON answers (``POST /goals``, ``GET /goals/{id}``,
``/approvals``, ``/halts``, ``/audit/…``): a tool's result is that route's answer, typed.
"""

from __future__ import annotations

from typing import Any, Literal

from agentos_schemas.rpc import ApprovalInfo, TraceEvent, TraceTask
from pydantic import BaseModel, ConfigDict, Field

GoalState = Literal["submitted", "running", "held", "completed", "failed", "escalated"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "escalated"})
"""States after which a goal does nothing more by itself (``escalated`` waits for a human)."""


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)


class GoalReceipt(_Result):
    """A goal accepted by ``POST /goals`` (``goal.submitted`` is in the log)."""

    goal_id: str
    event_id: str
    tenant: str
    duplicate: bool
    """True when the idempotency key had already made this goal: nothing new was published."""
    status_url: str


class Failure(_Result):
    code: str
    reason: str


class Escalation(_Result):
    to: str
    reason: str


class Hold(_Result):
    capability: str | None = None
    step_id: str | None = None
    reason: str = ""


class GoalStatus(_Result):
    """A goal's status folded from its events in the log (what ``GET /goals/{id}`` answers)."""

    goal_id: str
    status: GoalState
    complete: bool
    """Whether the scan read the log to its end (false: a very long log was cut; ask again)."""
    events: int
    plan_revision: int | None = None
    steps: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    text: str | None = None
    workflow: str | None = None
    tenant: str | None = None
    submitted_at: str | None = None
    updated_at: str | None = None
    result: str | None = None
    """The goal's report, once it completed."""
    cost_usd: float | None = None
    tokens: int | None = None
    failure: Failure | None = None
    escalation: Escalation | None = None
    held: Hold | None = None


class GoalReport(GoalStatus):
    """The goal's outcome: its status once it finished, or as it stands when the wait ran out."""

    finished: bool
    """True once the goal completed, failed or was escalated to a human."""


class ApprovalList(_Result):
    approvals: list[ApprovalInfo]
    count: int


class ApprovalVote(_Result):
    """An approval after a vote (``state``: approved, rejected, or ``pending (1 of 2 approvals)``)."""

    approval: ApprovalInfo
    state: str
    voted_by: str
    """The human the vote is recorded for (the key's name, or the one an admin key named)."""


class Switch(_Result):
    """A kill switch that is on (a key in ``AGENTOS_CONTROL``)."""

    key: str
    scope: str
    target: str
    reason: str
    by: str
    """The principal that turned it on (``key:<name>``)."""
    at: float
    revision: int = 0


class HaltList(_Result):
    halts: list[Switch]
    count: int


class Resumed(_Result):
    key: str
    was_on: bool
    """Whether the switch was on (resuming a switch that is off changes nothing but is recorded)."""


class AuditPage(_Result):
    """One page of audit rows, newest first; pass ``next_cursor`` for the next page."""

    rows: list[dict[str, Any]] = Field(
        description="seq, time, tenant, type, agent, goal_id, task_id, models, tools, cost_usd, tokens, "
        "tags, policy_version, principal, id"
    )
    count: int
    next_cursor: str | None = None


class GoalTrace(_Result):
    """A goal's events as a causal tree, and per task what its agent saw and used."""

    goal_id: str
    roots: list[str]
    events: list[TraceEvent]
    tasks: list[TraceTask]
    truncated: bool


__all__ = [
    "TERMINAL",
    "ApprovalList",
    "ApprovalVote",
    "AuditPage",
    "GoalReceipt",
    "GoalReport",
    "GoalState",
    "GoalStatus",
    "GoalTrace",
    "HaltList",
    "Resumed",
    "Switch",
]
