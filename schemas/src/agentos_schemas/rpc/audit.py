"""Request/reply contracts of the audit service: analysts' questions over the projection."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
