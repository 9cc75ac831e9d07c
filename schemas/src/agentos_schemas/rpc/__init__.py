"""Request/reply contracts (core NATS, not stored in the log): questions answered from projections.

Subjects live under ``agentosrpc.`` so they never fall into the ``AGENTOS_EVENTS`` stream. One module
per service (:mod:`.memory`, :mod:`.policy`, :mod:`.audit`); every name is also importable from here,
loaded with its module on first use, so a process that asks only the policy service builds only its
models (the CLI's ``approvals`` and ``budget`` start faster for it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentos_schemas.rpc.audit import (
        AUDIT_MAX_ROWS,
        AUDIT_MAX_TRACE_EVENTS,
        AUDIT_QUERY,
        AUDIT_TRACE,
        AuditErrorCode,
        AuditQuery,
        AuditQueryReply,
        AuditTrace,
        AuditTraceReply,
        TraceEvent,
        TraceTask,
    )
    from agentos_schemas.rpc.memory import (
        MEMORY_SEARCH,
        MemoryEntry,
        MemoryKind,
        MemorySearch,
        MemorySearchResult,
    )
    from agentos_schemas.rpc.policy import (
        POLICY_APPROVAL,
        POLICY_APPROVALS,
        POLICY_BUDGET,
        POLICY_DECIDE,
        POLICY_VOTE,
        ActionKind,
        ApprovalInfo,
        ApprovalList,
        ApprovalListReply,
        ApprovalQuery,
        ApprovalReply,
        ApprovalStatusName,
        ApprovalVote,
        BudgetLine,
        BudgetQuery,
        BudgetReport,
        Decision,
        DecisionCode,
        PolicyDecision,
        PolicyRequest,
    )

_WHERE = {
    "AUDIT_MAX_ROWS": "audit",
    "AUDIT_MAX_TRACE_EVENTS": "audit",
    "AUDIT_QUERY": "audit",
    "AUDIT_TRACE": "audit",
    "AuditErrorCode": "audit",
    "AuditQuery": "audit",
    "AuditQueryReply": "audit",
    "AuditTrace": "audit",
    "AuditTraceReply": "audit",
    "TraceEvent": "audit",
    "TraceTask": "audit",
    "MEMORY_SEARCH": "memory",
    "MemoryEntry": "memory",
    "MemoryKind": "memory",
    "MemorySearch": "memory",
    "MemorySearchResult": "memory",
    "ActionKind": "policy",
    "ApprovalInfo": "policy",
    "ApprovalList": "policy",
    "ApprovalListReply": "policy",
    "ApprovalQuery": "policy",
    "ApprovalReply": "policy",
    "ApprovalStatusName": "policy",
    "ApprovalVote": "policy",
    "BudgetLine": "policy",
    "BudgetQuery": "policy",
    "BudgetReport": "policy",
    "Decision": "policy",
    "DecisionCode": "policy",
    "POLICY_APPROVAL": "policy",
    "POLICY_APPROVALS": "policy",
    "POLICY_BUDGET": "policy",
    "POLICY_DECIDE": "policy",
    "POLICY_VOTE": "policy",
    "PolicyDecision": "policy",
    "PolicyRequest": "policy",
}
__all__ = [
    "AUDIT_MAX_ROWS",
    "AUDIT_MAX_TRACE_EVENTS",
    "AUDIT_QUERY",
    "AUDIT_TRACE",
    "MEMORY_SEARCH",
    "POLICY_APPROVAL",
    "POLICY_APPROVALS",
    "POLICY_BUDGET",
    "POLICY_DECIDE",
    "POLICY_VOTE",
    "ActionKind",
    "ApprovalInfo",
    "ApprovalList",
    "ApprovalListReply",
    "ApprovalQuery",
    "ApprovalReply",
    "ApprovalStatusName",
    "ApprovalVote",
    "AuditErrorCode",
    "AuditQuery",
    "AuditQueryReply",
    "AuditTrace",
    "AuditTraceReply",
    "BudgetLine",
    "BudgetQuery",
    "BudgetReport",
    "Decision",
    "DecisionCode",
    "MemoryEntry",
    "MemoryKind",
    "MemorySearch",
    "MemorySearchResult",
    "PolicyDecision",
    "PolicyRequest",
    "TraceEvent",
    "TraceTask",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'agentos_schemas.rpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"agentos_schemas.rpc.{module}"), name)
    globals()[name] = value
    return value
