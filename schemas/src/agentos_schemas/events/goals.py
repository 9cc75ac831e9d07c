"""Goal lifecycle: a goal is submitted, planned (and re-planned), then completes, fails or escalates."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentos_schemas.events._base import EventData
from agentos_schemas.events.tasks import Effect, Usage


class Limits(BaseModel):
    """Exit conditions for one goal; hitting any ends the goal with a clear status."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    max_steps: int = Field(default=30, ge=1, le=10_000)
    """Most task attempts (all steps, retries included) the goal may start."""
    max_retries: int = Field(default=2, ge=0, le=20)
    """Retries of one step before the goal replans around it."""
    max_replans: int = Field(default=3, ge=0, le=50)
    """Most re-plans after failures or QA rejections."""
    deadline_s: float = Field(default=600.0, gt=0)
    """Wall-clock seconds from submission until the goal is failed."""
    budget_usd: float = Field(default=5.0, ge=0)
    """Model spend cap for the goal, in US dollars."""


class PlanStep(BaseModel):
    """One node of a plan's DAG."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    step_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    """Unique within the plan."""
    capability: str
    """What kind of specialist must do it (``research``, ``write``, ``qa`` …)."""
    instruction: str
    """What the step must achieve, in the planner's words."""
    depends_on: tuple[str, ...] = ()
    """Steps whose outputs this step needs; it starts only after they are accepted."""
    review: bool = False
    """Whether a QA specialist must accept the output before dependants start."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    """Extra structured inputs for the step."""


class GoalSubmitted(EventData):
    event_name = "goal.submitted"

    goal_id: str
    """Identifier of the goal; also the workflow's correlation id."""
    text: str = Field(min_length=1, max_length=20_000)
    """The goal in natural language."""
    workflow: str | None = None
    """Name of a declared workflow to run instead of asking the LLM planner."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    """Structured inputs (ticket fields, order ids …)."""
    limits: Limits = Field(default_factory=Limits)
    capability: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    """The capability the goal's intent needs (e.g. ``triage`` for a support ticket): its plan
    must give the work to an agent that has it. While no agent serves it, the goal is held."""


class GoalPlanned(EventData):
    event_name = "goal.planned"

    goal_id: str
    revision: int = Field(ge=0)
    """0 for the first plan, then one more per re-plan."""
    steps: tuple[PlanStep, ...]
    planner: str
    """``llm:<model>`` or ``workflow:<name>``."""
    reason: str | None = None
    """Why this re-plan happened (absent for the first plan)."""
    usage: Usage = Field(default_factory=Usage)
    """Model calls the planner made."""


class GoalCompleted(EventData):
    event_name = "goal.completed"

    goal_id: str
    result: str
    """The final deliverable (e.g. the report)."""
    outputs: dict[str, Any] = Field(default_factory=dict)
    """Accepted output of every step, by step id."""
    effects: dict[str, tuple[Effect, ...]] = Field(default_factory=dict)
    """What really happened to the outside actions and memory writes of each accepted step, by
    step id (steps without any are left out)."""
    cost_usd: float = 0.0
    tokens: int = 0
    duration_s: float = 0.0
    steps_run: int = 0


FailureCode = Literal[
    "max_steps", "max_retries", "max_replans", "deadline", "budget", "planner_failed", "halted", "invalid"
]


class GoalFailed(EventData):
    event_name = "goal.failed"

    goal_id: str
    code: FailureCode
    """Which exit condition ended the goal."""
    reason: str
    cost_usd: float = 0.0
    tokens: int = 0
    duration_s: float = 0.0
    steps_run: int = 0


class GoalEscalated(EventData):
    event_name = "goal.escalated"

    goal_id: str
    reason: str
    to: str
    """Escalation path (a role or queue) that must take over."""
    step_id: str | None = None


class GoalHeld(EventData):
    """The goal waits: no registered agent serves a capability it needs. It is not given to
    another agent; it goes on when an agent with the capability is announced."""

    event_name = "goal.held"

    goal_id: str
    capability: str
    """The capability no registered agent has."""
    reason: str
    """Why the work is held, for operators (``no agent serves capability 'triage'``)."""
    step_id: str | None = None
    """The held step; absent when the goal's intent itself cannot be served (before planning)."""
    served: tuple[str, ...] = ()
    """The capabilities registered agents did serve when the goal was held."""
