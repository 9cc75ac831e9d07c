"""Task lifecycle, context assembly and QA verdicts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentos_schemas.events._base import EventData


class ModelCall(BaseModel):
    """One model call made while working on a task."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    model: str
    """The litellm model string that answered (or failed)."""
    ok: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    error: str | None = None


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    calls: tuple[ModelCall, ...] = ()
    tool_calls: int = 0

    @property
    def tokens(self) -> int:
        return sum(c.input_tokens + c.output_tokens for c in self.calls)

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)


class TaskAssigned(EventData):
    """The orchestrator asks one specialist to do one step (a command, answered by facts)."""

    event_name = "task.assigned"

    task_id: str
    """Unique per attempt: ``<goal>/<revision>/<step>/<attempt>``."""
    goal_id: str
    step_id: str
    attempt: int = Field(ge=1)
    agent: str
    """Name of the specialist's charter chosen for the step."""
    capability: str
    instruction: str
    goal_text: str
    depends_on: tuple[str, ...] = ()
    handoff: dict[str, Any] = Field(default_factory=dict)
    """Accepted outputs of the steps this one depends on, by step id."""
    feedback: str | None = None
    """Why the previous attempt was rejected, if it was."""
    review_of: str | None = None
    """For QA steps: the step id whose output is under review."""


class TaskStarted(EventData):
    event_name = "task.started"

    task_id: str
    goal_id: str
    agent: str
    instance: str
    """The specialist replica that took the task."""


class Settlement(BaseModel):
    """What a model call that held a budget reservation really cost (from the provider's usage)."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    reservation_id: str
    cost_usd: float = Field(ge=0)
    tokens: int = Field(ge=0)


EffectOutcome = Literal["succeeded", "duplicate", "failed", "denied", "rejected", "expired"]


class Effect(BaseModel):
    """What really happened to one write a task asked for (an outside action or a memory write),
    recorded by the specialist's tool path from the policy decision and the execution, never by
    the model: the evidence the orchestrator attests an output's claims against."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    tool: str
    action: str
    """``outside_action`` or ``memory_write``."""
    outcome: EffectOutcome
    """``succeeded`` / ``duplicate`` (done, now or by an earlier attempt); ``failed`` (the tool
    raised); ``denied`` / ``rejected`` / ``expired`` (the policy, an approver, or an approval's
    timeout said no, so nothing ran)."""
    detail: str = ""
    fact_id: str = ""
    """The event that records it: the ``action.executed`` or ``memory.proposed`` id, or the
    ``policy.decided`` decision id when nothing ran."""

    @property
    def done(self) -> bool:
        return self.outcome in ("succeeded", "duplicate")


class TaskCompleted(EventData):
    event_name = "task.completed"

    task_id: str
    goal_id: str
    step_id: str
    agent: str
    output: dict[str, Any]
    """Structured output, validated against the charter's output schema."""
    usage: Usage = Field(default_factory=Usage)
    settlement: Settlement | None = None
    """The settlement of the model call that gave the output, carried here instead of its own
    ``budget.settlement_requested`` (one durable event less per task). The policy service settles
    it only for a reservation made for this task and agent."""
    effects: tuple[Effect, ...] = ()
    """Every outside action and memory write the task asked for, and what came of each."""
    claims: dict[str, str] = Field(default_factory=dict)
    """Output fields that state an effect, each with the tool whose effects it states (from the
    charter's ``claims``); the orchestrator checks each against ``effects`` before accepting."""


TaskFailureCode = Literal[
    "model_unavailable", "invalid_output", "tool_loop", "budget", "denied", "halted", "loop", "unavailable", "error"
]


class TaskFailed(EventData):
    event_name = "task.failed"

    task_id: str
    goal_id: str
    step_id: str
    agent: str
    reason: str
    retryable: bool = True
    code: TaskFailureCode = "error"
    """Why it failed; ``budget`` and ``halted`` end the goal at once instead of being retried;
    ``unavailable`` (the policy service or a store it needs could not decide in time, or every
    model provider in the chain was unreachable, timed out or overloaded) is retried with backoff
    without counting against the step's retries or the goal's steps."""
    usage: Usage = Field(default_factory=Usage)


class ContextManifest(BaseModel):
    """Exactly what went into an agent's context, so an auditor can see what it saw."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    charter: str
    """``name@version`` of the charter whose system prompt was used."""
    memory_ids: tuple[str, ...] = ()
    memory_kinds: dict[str, str] = Field(default_factory=dict)
    """The kind (working, episodic, semantic) of each memory entry, by id."""
    tools: tuple[str, ...] = ()
    tool_definitions: dict[str, str] = Field(default_factory=dict)
    """The pinned definition hash of each connector tool offered (``connector.announced``), by name."""
    handoff_sources: tuple[str, ...] = ()
    """Step ids whose outputs were handed over."""
    tokens: dict[str, int] = Field(default_factory=dict)
    """Token count per part (system, memory, handoff, task) and ``total``."""
    budget_tokens: int = 0
    trimmed: tuple[str, ...] = ()
    """Parts dropped or cut to fit the budget."""
    classification: tuple[str, ...] = ()
    """Kinds of sensitive data the context touched, all redacted before the agent saw them
    (``email``, ``phone``, ``card``, ``iban``, ``national_id``, ``secret``)."""


class ContextReady(EventData):
    event_name = "context.ready"

    task_id: str
    goal_id: str
    agent: str
    step_id: str = ""
    """The plan step the task belongs to."""
    messages: tuple[dict[str, Any], ...]
    """The chat messages the model will receive."""
    manifest: ContextManifest


class TaskReviewed(EventData):
    """A QA verdict on one step's output; a rejection sends the step back with feedback."""

    event_name = "task.reviewed"

    goal_id: str
    step_id: str
    """The step whose output was reviewed."""
    task_id: str
    """The attempt that was reviewed."""
    verdict: Literal["accepted", "rejected"]
    feedback: str = ""
    reviewer: str
