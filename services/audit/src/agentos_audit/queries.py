"""The analysts' and risk officers' questions, each one SQL query over the projection.

Every function takes the pool and the schema and returns plain rows (dicts), so the CLI can print
them as a table, JSON or CSV.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import asyncpg
from agentos_schemas import CATALOGUE

from agentos_audit.classify import PERSONAL
from agentos_audit.schema import check_schema

_SHORT_NAME = re.compile(r"^[a-z_]+\.[a-z_]+$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
POLICY_NOTE = (
    "Denials are policy.decided events with decision 'deny', approvals that ended rejected or "
    "expired (approval.decided), and task.failed events whose reason mentions a policy, a denial or a "
    "block. Decisions taken before the policy service ran are not in the log."
)
DECISION_COLUMNS = (
    "seq, time, agent, task_id, data->>'decision' AS decision, data->>'code' AS code, "
    "data->'request'->>'action' AS action, data->'request'->>'resource' AS resource, "
    "policy_version, id"
)
LIST_COLUMNS = (
    "seq, time, tenant, type, agent, goal_id, task_id, models, tools, cost_usd, tokens, tags, "
    "policy_version, principal, id, source, subject, datacontenttype, extensions"
)


def parse_when(text: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """``7d``/``24h``/``30m``/``2w``/``90s`` ago, or an ISO date or time (UTC if no offset)."""
    if not text:
        return None
    now = now or dt.datetime.now(dt.UTC)
    m = _DURATION.match(text.strip())
    if m:
        return now - dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration like 7d/24h/30m nor an ISO date/time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def types_named(name: str) -> list[str]:
    """Full CloudEvent types for a catalogue name like ``task.completed`` (every version); any other
    name is a full type as given (``dev.agentos.task.completed.v1``, or a foreign type an integrator
    sent, such as ``com.example.order.created``)."""
    if not _SHORT_NAME.match(name):
        return [name]
    return sorted(t for t in CATALOGUE if t.startswith(f"dev.agentos.{name}.v"))


@dataclass
class Filters:
    """``agentos audit query`` filters; every one given must hold."""

    tenant: str | None = None
    agent: str | None = None
    type: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    goal: str | None = None
    tool: str | None = None
    model: str | None = None
    tag: str | None = None
    limit: int = 100

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its arguments."""
        clauses: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        simple = {"tenant": self.tenant, "agent": self.agent}
        clauses += [f"{col} = {arg(v)}" for col, v in simple.items() if v is not None]
        if self.type is not None:
            clauses.append(f"type = ANY({arg(types_named(self.type))}::text[])")
        if self.since is not None:
            clauses.append(f"time >= {arg(self.since)}")
        if self.until is not None:
            clauses.append(f"time < {arg(self.until)}")
        if self.goal is not None:
            ref = arg(self.goal)
            clauses.append(f"(goal_id = {ref} OR correlationid = {ref})")
        arrays = {"tools": self.tool, "models": self.model, "tags": self.tag}
        clauses += [f"{col} @> ARRAY[{arg(v)}::text]" for col, v in arrays.items() if v is not None]
        return (" AND ".join(clauses) or "true"), args


async def query_events(pool: asyncpg.Pool, schema: str, filters: Filters) -> list[dict[str, Any]]:
    """Events matching ``filters``, newest first, at most ``filters.limit``."""
    where, args = filters.where()
    sql = (
        f"SELECT {LIST_COLUMNS} FROM {check_schema(schema)}.events WHERE {where} "
        f"ORDER BY time DESC, seq DESC LIMIT {int(filters.limit)}"
    )
    return [dict(r) for r in await pool.fetch(sql, *args)]


async def personal_data(
    pool: asyncpg.Pool, schema: str, since: dt.datetime | None, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Agents whose events carried personal data since ``since``: how often, in which goals and
    event types, which kinds of personal data, first and last time."""
    f = Filters(tenant=tenant, since=since, tag=PERSONAL)
    where, args = f.where()
    sql = f"""SELECT e.agent, count(DISTINCT e.id) AS events, count(DISTINCT e.goal_id) AS goals,
        array_agg(DISTINCT regexp_replace(e.type, '^dev[.]agentos[.](.*)[.]v[0-9]+$', '\\1')) AS types,
        array_agg(DISTINCT t.tag) FILTER (WHERE t.tag <> '{PERSONAL}') AS kinds,
        min(e.time) AS first_seen, max(e.time) AS last_seen
        FROM {check_schema(schema)}.events e CROSS JOIN LATERAL unnest(e.tags) AS t(tag)
        WHERE {where} AND e.agent IS NOT NULL GROUP BY e.agent ORDER BY e.agent"""
    return [dict(r) for r in await pool.fetch(sql, *args)]


async def denied(
    pool: asyncpg.Pool, schema: str, since: dt.datetime | None, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Policy denials, newest first (see :data:`POLICY_NOTE` for what counts)."""
    f = Filters(tenant=tenant, since=since)
    where, args = f.where()
    args += [types_named("policy.decided"), types_named("approval.decided"), types_named("task.failed")]
    n = len(args)
    sql = f"""SELECT seq, time, tenant, regexp_replace(type, '^dev[.]agentos[.](.*)[.]v[0-9]+$', '\\1') AS kind,
        agent, goal_id, task_id, coalesce(data->'request'->>'action', '') AS action,
        coalesce(data->'request'->>'resource', '') AS resource,
        coalesce(data->>'reason', data->'reasons'->>0, data->>'status', '') AS reason, policy_version, id
        FROM {check_schema(schema)}.events WHERE {where} AND (
          (type = ANY(${n - 2}::text[]) AND data->>'decision' = 'deny')
          OR (type = ANY(${n - 1}::text[]) AND data->>'status' IN ('rejected', 'expired'))
          OR (type = ANY(${n}::text[]) AND data->>'reason' ~* '(polic|denied|not allowed|forbidden|blocked)'))
        ORDER BY time DESC, seq DESC"""
    return [dict(r) for r in await pool.fetch(sql, *args)]


async def cost(pool: asyncpg.Pool, schema: str, goal: str, tenant: str | None = None) -> list[dict[str, Any]]:
    """Model calls, tokens and spend of one goal per agent and model (most expensive first)."""
    sql = f"""SELECT agent, model, calls, input_tokens, output_tokens, tokens, cost_usd
        FROM {check_schema(schema)}.v_goal_costs WHERE goal_id = $1 AND ($2::text IS NULL OR tenant = $2)
        ORDER BY cost_usd DESC, agent, model"""
    return [dict(r) for r in await pool.fetch(sql, goal, tenant)]


ACTIONS = ("model_call", "tool_call", "memory_write", "outside_action")


async def allowed_by(
    pool: asyncpg.Pool, schema: str, ref: str, tenant: str | None = None, since: dt.datetime | None = None
) -> dict[str, Any]:
    """Which policy decisions (and versions) let an event or an action through.

    For an event id: the event and the ``policy.decided`` facts about it — the decision it names
    (``decision_id``, as ``action.executed`` does) and every decision taken for its task. For an
    action kind (``model_call`` …), a tool or model, or another resource (``memory:episodic``):
    the decisions about it since ``since``, grouped by policy version and outcome.
    Returns ``{"ref", "kind": "event"|"action", "rows", "decisions"}``.
    """
    event = await pool.fetchrow(
        f"SELECT seq, time, tenant, type, agent, goal_id, task_id, policy_version, id, "
        f"data->>'decision_id' AS decision_id FROM {check_schema(schema)}.events WHERE id = $1",
        ref,
    )
    if event is not None:
        decisions = await _decisions_about_event(pool, schema, event)
        return {"ref": ref, "kind": "event", "rows": [dict(event)], "decisions": decisions}
    decisions = await _decisions_about_action(pool, schema, ref, tenant, since)
    return {"ref": ref, "kind": "action", "rows": [], "decisions": decisions}


async def _decisions_about_event(pool: asyncpg.Pool, schema: str, event: asyncpg.Record) -> list[dict[str, Any]]:
    """The decision the event names and every decision taken for its task, in stream order."""
    decisions = await pool.fetch(
        f"""SELECT {DECISION_COLUMNS} FROM {check_schema(schema)}.events WHERE type = ANY($1::text[])
            AND (data->>'decision_id' = $2 OR (task_id IS NOT NULL AND task_id = $3)) ORDER BY seq LIMIT 100""",
        types_named("policy.decided"),
        event["decision_id"],
        event["task_id"],
    )
    return [dict(d) for d in decisions]


async def _decisions_about_action(
    pool: asyncpg.Pool, schema: str, ref: str, tenant: str | None, since: dt.datetime | None
) -> list[dict[str, Any]]:
    """The decisions about an action kind, a tool or model, or a resource, by policy version and outcome."""
    s = check_schema(schema)
    about = (
        "data->'request'->>'action' = $2"
        if ref in ACTIONS
        else "data->'request'->>'resource' = $2"
        if ":" in ref
        else "(tools @> ARRAY[$2::text] OR models @> ARRAY[$2::text])"
    )  # GIN-indexed
    decisions = await pool.fetch(
        f"""SELECT policy_version, data->>'decision' AS decision, data->'request'->>'action' AS action,
            data->'request'->>'resource' AS resource, count(*) AS decisions, max(time) AS last_seen
            FROM {s}.events WHERE type = ANY($1::text[]) AND {about} AND ($3::text IS NULL OR tenant = $3)
            AND ($4::timestamptz IS NULL OR time >= $4)
            GROUP BY 1, 2, 3, 4 ORDER BY last_seen DESC LIMIT 100""",
        types_named("policy.decided"),
        ref,
        tenant,
        since,
    )
    return [dict(d) for d in decisions]


async def goal_events(pool: asyncpg.Pool, schema: str, goal: str, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every event of one goal (by correlation or goal id), in stream order, payload included."""
    sql = f"""SELECT seq, id, type, time, source, tenant, agent, task_id, goal_id, causationid, correlationid,
        trace_id, models, tools, cost_usd, tokens, tags, policy_version, data
        FROM {check_schema(schema)}.events WHERE (correlationid = $1 OR goal_id = $1)
        AND ($2::text IS NULL OR tenant = $2) ORDER BY seq"""
    return [dict(r) for r in await pool.fetch(sql, goal, tenant)]


__all__ = [
    "ACTIONS",
    "LIST_COLUMNS",
    "POLICY_NOTE",
    "Filters",
    "allowed_by",
    "cost",
    "denied",
    "goal_events",
    "parse_when",
    "personal_data",
    "query_events",
    "types_named",
]
