"""Request/reply contracts of the policy service: the decision point, approvals and budgets."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    "taint",
    "pending",
    "rejected",
    "expired",
    "no_policy",
    "unreachable",
    "unavailable",
    "error",
]
ApprovalStatusName = Literal["pending", "approved", "rejected", "expired"]


class ToolClassification(BaseModel):
    """How a tool touches the world, as its connector declares it (``connectors/*.yaml``): what the
    decision point weighs for a tool that the policy's own ``tools:`` table does not name."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    access: Literal["read", "write", "memory"] = "read"
    """``write``: an outside action (it changes the world outside AgentOS); ``memory``: a memory write."""
    data_classes: tuple[Literal["public", "internal", "confidential", "personal"], ...] = ("internal",)
    """Classifications of the data the tool may return or send."""
    risk: Literal["low", "medium", "high"] = "low"
    idempotent: bool = False
    """A write the server itself does once per idempotency key (safe to send again after a crash)."""
    untrusted: bool = False
    """Its output is untrusted content (web pages, e-mail, tickets): reading it taints the task."""
    definition_hash: str = ""
    """sha256 of the tool's pinned definition (name, description, schemas) the agent was offered."""


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
    classification: ToolClassification | None = None
    """The tool's declared classification (for tools of connectors; built-ins declare one too)."""
    tainted_by: tuple[str, ...] = ()
    """Tools with untrusted output whose results this task has already read (the taint rule)."""


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
