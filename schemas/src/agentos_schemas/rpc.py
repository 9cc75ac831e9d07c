"""Request/reply contracts (core NATS, not stored in the log): questions answered from projections.

Subjects live under ``agentosrpc.`` so they never fall into the ``AGENTOS_EVENTS`` stream.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MEMORY_SEARCH = "agentosrpc.memory.search"

MemoryKind = Literal["working", "episodic", "semantic"]


class MemoryEntry(BaseModel):
    """One memory with its provenance."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    id: str
    kind: MemoryKind
    content: str
    tags: tuple[str, ...] = ()
    score: float = 0.0
    """Relevance to the query (higher is better)."""
    agent: str | None = None
    """The agent whose work produced it (None for curated semantic memory)."""
    goal_id: str | None = None
    task_id: str | None = None
    event_id: str | None = None
    """The event that proposed it."""
    source: str | None = None
    """For curated entries: the file it was loaded from."""
    created_at: dt.datetime | None = None


class MemorySearch(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    tenant: str
    query: str = Field(max_length=4000)
    kinds: tuple[MemoryKind, ...] = ("working", "episodic", "semantic")
    goal_id: str | None = None
    """Working memory is searched only within this goal; other goals' working memory never leaks in."""
    k: int = Field(default=5, ge=0, le=50)


class MemorySearchResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    entries: tuple[MemoryEntry, ...] = ()
    error: str | None = None


# -- policy: the decision point, approvals and budgets ----------------------------------------------

from typing import Any  # noqa: E402  (kept with the policy contracts appended here)

POLICY_DECIDE = "agentosrpc.policy.decide"
POLICY_APPROVAL = "agentosrpc.policy.approval"
POLICY_APPROVALS = "agentosrpc.policy.approvals"
POLICY_VOTE = "agentosrpc.policy.vote"
POLICY_BUDGET = "agentosrpc.policy.budget"

ActionKind = Literal["model_call", "tool_call", "memory_write", "outside_action"]
Decision = Literal["allow", "deny", "require_approval"]
DecisionCode = Literal[
    "ok",
    "approved",
    "not_allowed",
    "scope",
    "model",
    "rate_limit",
    "loop",
    "budget",
    "spend_spike",
    "risk",
    "sequence",
    "pending",
    "rejected",
    "expired",
    "no_policy",
    "unreachable",
    "unavailable",
    "error",
]
ApprovalStatusName = Literal["pending", "approved", "rejected", "expired"]


class PolicyRequest(BaseModel):
    """One question to the decision point: may this principal take this action on this resource?"""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    tenant: str
    principal: str
    """Who acts: ``agent:<name>`` or ``user:<id>``."""
    action: ActionKind
    resource: str
    """Model alias or string, tool name, memory kind (``memory:episodic``) or ``connector:resource``."""
    agent: str = ""
    goal_id: str = ""
    task_id: str = ""
    tool: str | None = None
    """The tool behind a tool call, memory write or outside action, if any."""
    args: dict[str, Any] = Field(default_factory=dict)
    """A summary of the call's arguments (strings cut short)."""
    estimated_cost_usd: float = Field(default=0.0, ge=0)
    estimated_tokens: int = Field(default=0, ge=0)
    call_id: str = ""
    """Idempotency key of the attempt: asking again for the same call finds the same approval."""


class PolicyDecision(BaseModel):
    """The decision point's answer."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    decision: Decision
    code: DecisionCode = "ok"
    """Why, in one word (``budget``, ``loop``, ``not_allowed`` …); ``ok`` for a plain allow."""
    reasons: tuple[str, ...] = ()
    policy_version: str = ""
    decision_id: str
    approval_id: str | None = None
    reservation_id: str | None = None
    """Budget reservation held for an allowed model call, to be settled with the real cost."""
    risk: str | None = None


class ApprovalQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    approval_id: str


class ApprovalInfo(BaseModel):
    """One approval and where it stands."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    approval_id: str
    tenant: str
    status: ApprovalStatusName
    risk: str
    needed: int
    """Distinct approvers required (two-person rule: 2)."""
    approver_role: str
    approved_by: tuple[str, ...] = ()
    rejected_by: str | None = None
    reason: str = ""
    escalated: bool = False
    agent: str = ""
    goal_id: str = ""
    task_id: str = ""
    action: str = ""
    resource: str = ""
    summary: str = ""
    created_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None


class ApprovalReply(BaseModel):
    model_config = ConfigDict(frozen=True)

    approval: ApprovalInfo | None = None
    error: str | None = None


class ApprovalList(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant: str | None = None
    """Only this tenant's approvals; None for every tenant."""
    status: ApprovalStatusName = "pending"


class ApprovalListReply(BaseModel):
    model_config = ConfigDict(frozen=True)

    approvals: tuple[ApprovalInfo, ...] = ()
    error: str | None = None


class ApprovalVote(BaseModel):
    """A human approves or rejects a pending approval."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    approval_id: str
    user: str
    """The human's id (``alice``), as named in the policy's ``humans``."""
    verdict: Literal["approve", "reject"]
    reason: str = ""


class BudgetQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant: str | None = None


class BudgetLine(BaseModel):
    """Spend against one cap in the current period."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    tenant: str
    scope: Literal["agent", "team", "tenant"]
    name: str
    period: Literal["day", "month"]
    period_key: str
    used_usd: float = 0.0
    reserved_usd: float = 0.0
    cap_usd: float | None = None
    used_tokens: int = 0
    reserved_tokens: int = 0
    cap_tokens: int | None = None


class BudgetReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    lines: tuple[BudgetLine, ...] = ()
    policy_version: str = ""
    error: str | None = None


# -- audit: analysts' questions over the projection --------------------------------------------------

AUDIT_QUERY = "agentosrpc.audit.query"
AUDIT_TRACE = "agentosrpc.audit.trace"
AUDIT_MAX_ROWS = 500
"""Most rows one ``audit.query`` answer carries; page on with ``next_cursor``."""
AUDIT_MAX_TRACE_EVENTS = 2000
"""Most events one ``audit.trace`` answer carries (a longer goal is cut, ``truncated: true``)."""

AuditErrorCode = Literal["ok", "invalid", "not_found", "error"]


def _filter() -> Any:
    return Field(default=None, max_length=256)


class AuditQuery(BaseModel):
    """Events matching every filter given, newest first (what ``agentos audit query`` asks)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    tenant: str | None = _filter()
    agent: str | None = _filter()
    type: str | None = _filter()
    """``task.completed`` (every version) or a full CloudEvent type."""
    since: str | None = _filter()
    """From: a duration ago (``7d``, ``24h``, ``30m``) or an ISO date/time."""
    until: str | None = _filter()
    """Before: a duration ago or an ISO date/time."""
    goal: str | None = _filter()
    """Goal id (the event's goal_id or correlation id)."""
    tool: str | None = _filter()
    model: str | None = _filter()
    tag: str | None = _filter()
    """Classification tag, e.g. ``personal_data``, ``pii:email``."""
    limit: int = Field(default=100, ge=1, le=AUDIT_MAX_ROWS)
    cursor: str | None = Field(default=None, max_length=512)
    """``next_cursor`` of the previous page: the rows after it (older)."""


class AuditQueryReply(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    rows: tuple[dict[str, Any], ...] = ()
    """Event rows: seq, time (ISO 8601 UTC), tenant, type, agent, goal_id, task_id, models, tools,
    cost_usd, tokens, tags, policy_version, principal, id."""
    next_cursor: str | None = None
    """Set when more rows match: pass it as ``cursor`` for the next page."""
    code: AuditErrorCode = "ok"
    error: str | None = None


class AuditTrace(BaseModel):
    """One goal's events as a causal tree (what ``agentos audit trace`` shows)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    goal_id: str = Field(min_length=1, max_length=256)
    tenant: str | None = _filter()
    max_events: int = Field(default=1000, ge=1, le=AUDIT_MAX_TRACE_EVENTS)


class TraceEvent(BaseModel):
    """One event in a goal's causal tree."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    id: str
    seq: int
    type: str
    time: dt.datetime
    parent_id: str | None = None
    """The event that caused this one (its ``causationid``), when it is in the trace; None for a root."""
    children: tuple[str, ...] = ()
    """Ids of the events it caused, in stream order."""
    label: str = ""
    details: tuple[str, ...] = ()
    """What is worth knowing about it: plan steps, context manifest, policy decision, usage …"""
    agent: str | None = None
    task_id: str | None = None
    causationid: str | None = None
    trace_id: str | None = None
    models: tuple[str, ...] = ()
    tokens: int = 0
    cost_usd: float = 0.0
    tags: tuple[str, ...] = ()


class TraceTask(BaseModel):
    """Per task: what its agent saw, what it used, how it ended."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    agent: str | None = None
    charter: str | None = None
    memory_ids: tuple[str, ...] = ()
    context_tokens: int | None = None
    models: tuple[str, ...] = ()
    tokens: int = 0
    cost_usd: float = 0.0
    trace_id: str | None = None
    outcome: str = "open"


class AuditTraceReply(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    goal_id: str = ""
    roots: tuple[str, ...] = ()
    """Ids of the events whose cause is not in the trace (the goal's submission first)."""
    events: tuple[TraceEvent, ...] = ()
    """Every event of the goal in stream order, each naming its parent and children."""
    tasks: tuple[TraceTask, ...] = ()
    truncated: bool = False
    """More events than ``max_events``: only the first ones (by stream order) are here."""
    code: AuditErrorCode = "ok"
    error: str | None = None
