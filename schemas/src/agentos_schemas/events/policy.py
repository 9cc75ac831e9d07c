"""Governance facts: policy decisions, approvals, outside actions, the budget ledger and alerts.

Every decision the policy service takes is a ``policy.decided`` fact carrying the request, so the
log shows each attempt (allowed or not) and ``agentos policy simulate`` can replay them against
another policy version.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from agentos_schemas.events._base import EventData
from agentos_schemas.rpc import Decision, DecisionCode, PolicyRequest


class PolicyDecided(EventData):
    """The decision point answered one request."""

    event_name = "policy.decided"

    decision_id: str
    request: PolicyRequest
    decision: Decision
    code: DecisionCode = "ok"
    reasons: tuple[str, ...] = ()
    policy_version: str
    approval_id: str | None = None
    reservation_id: str | None = None
    """Budget reservation held for an allowed model call."""
    risk: str | None = None


class ApprovalRequested(EventData):
    """A request needs human approval before it may go ahead."""

    event_name = "approval.requested"

    approval_id: str
    decision_id: str
    request: PolicyRequest
    risk: str
    needed: int = Field(ge=1)
    """Distinct approvers required (two for high risk: the two-person rule)."""
    approver_role: str
    reasons: tuple[str, ...] = ()
    expires_at: dt.datetime


class ApprovalVoted(EventData):
    """One human's vote on an approval; the same person voting twice does not count twice."""

    event_name = "approval.voted"

    approval_id: str
    user: str
    verdict: Literal["approve", "reject"]
    reason: str = ""
    approvals: int = 0
    """Distinct approvals so far, this vote included."""
    needed: int = 1


class ApprovalDecided(EventData):
    """An approval ended: approved by enough distinct people, rejected, or expired."""

    event_name = "approval.decided"

    approval_id: str
    status: Literal["approved", "rejected", "expired"]
    decided_by: tuple[str, ...] = ()
    reason: str = ""
    goal_id: str = ""
    task_id: str = ""


class ActionExecuted(EventData):
    """An allowed outside action (a write to the world outside AgentOS) was carried out."""

    event_name = "action.executed"

    decision_id: str
    """The ``policy.decided`` that allowed it."""
    action: str
    resource: str
    tool: str
    agent: str
    goal_id: str
    task_id: str
    idempotency_key: str
    outcome: Literal["succeeded", "failed", "duplicate"]
    """``duplicate``: the same action was already done once (a retried task), so nothing was redone."""
    detail: str = ""


class BudgetSettlementRequested(EventData):
    """A model call held a budget reservation; this is what it really cost (from the provider's usage)."""

    event_name = "budget.settlement_requested"

    reservation_id: str
    cost_usd: float = Field(ge=0)
    tokens: int = Field(ge=0)
    agent: str = ""
    goal_id: str = ""
    task_id: str = ""


class BudgetSettled(EventData):
    """The ledger replaced a reservation's estimate with the real cost."""

    event_name = "budget.settled"

    reservation_id: str
    estimated_usd: float
    cost_usd: float
    estimated_tokens: int
    tokens: int
    agent: str = ""
    goal_id: str = ""


AlertKind = Literal["loop", "replan_storm", "spend_spike", "approval_timeout", "low_confidence"]


class AlertRaised(EventData):
    """Runaway behaviour or a governance timeout that an operator should see."""

    event_name = "alert.raised"

    alert_id: str
    kind: AlertKind
    severity: Literal["warning", "critical"] = "warning"
    detail: str
    agent: str = ""
    goal_id: str = ""
    task_id: str = ""
