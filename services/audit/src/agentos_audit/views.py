"""Analyst views over ``audit.events`` and the read-only ``agentos_analyst`` role.

Recreated on every start, because the per-type views follow the event catalogue:

- ``v_events`` — every event with its short ``name`` (``task.completed``) and all columns;
- ``v_<domain>_<event>`` (``_v<N>`` for versions above 1) — one per catalogued type: the envelope
  and extracted columns plus one column per payload field (scalars typed, the rest ``jsonb``;
  a field named like an envelope column is prefixed ``data_``, except ``agent``, ``task_id`` and
  ``goal_id``, which are the extracted columns already);
- personal fields (``agentos_schemas.personal``) show as ``[ENCRYPTED]``, or ``[ERASED]`` once
  ``agentos audit erase`` destroyed their key (the function ``<schema>.personal``);
- ``v_model_calls`` — one row per model call in any payload's ``usage.calls``;
- ``v_goal_costs`` — calls, tokens and cost per tenant, goal, agent and model (``agent`` is the
  emitting service for calls made outside an agent, such as the planner's).
"""

from __future__ import annotations

import datetime as dt
import logging
import types
import typing
from typing import Any

import asyncpg
from agentos_kernel.db import Connection
from agentos_schemas import CATALOGUE
from agentos_schemas.personal import personal_plan
from agentos_schemas.subjects import parse_type

from agentos_audit.erasure import personal_function_sql

log = logging.getLogger("agentos.audit")

ANALYST_ROLE = "agentos_analyst"
ENVELOPE = (
    "seq",
    "id",
    "time",
    "tenant",
    "source",
    "subject",
    "correlationid",
    "causationid",
    "principal",
    "trace_id",
    "agent",
    "task_id",
    "goal_id",
    "models",
    "tools",
    "cost_usd",
    "tokens",
    "tags",
    "policy_version",
)
_SAME = {"agent", "task_id", "goal_id"}
_RESERVED = set(ENVELOPE) | {"type", "data", "traceparent", "name"}


def sql_kind(annotation: Any) -> str:
    """The SQL type a payload field is shown as in a per-type view."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return sql_kind(args[0]) if len(args) == 1 else "jsonb"
    if origin is typing.Literal:
        return "text" if all(isinstance(v, str) for v in typing.get_args(annotation)) else "jsonb"
    simple = {bool: "boolean", int: "bigint", float: "float8", str: "text", dt.datetime: "timestamptz"}
    return simple.get(annotation, "jsonb")


def view_name(type_: str) -> str:
    """``dev.agentos.task.completed.v1`` -> ``v_task_completed`` (``_v2`` … for later versions)."""
    domain, event, version = parse_type(type_)
    return f"v_{domain}_{event}" + (f"_v{version}" if version > 1 else "")


def type_view_sql(schema: str, type_: str, model: Any) -> str:
    """``CREATE OR REPLACE VIEW`` of one event type. Personal (crypto-shredded) fields show as
    ``[ENCRYPTED]``, or ``[ERASED]`` once their key is destroyed (``<schema>.personal``)."""
    cols = []
    plan = personal_plan(model)
    personal = set(plan.fields) if plan is not None else set()
    for field, info in model.model_fields.items():
        if field in _SAME:
            continue
        alias = f"data_{field}" if field in _RESERVED else field
        kind = sql_kind(info.annotation)
        if field in personal:
            cols.append(f"{schema}.personal(data->>'{field}') AS {alias}")
        elif kind == "text":
            cols.append(f"data->>'{field}' AS {alias}")
        elif kind == "jsonb":
            cols.append(f"data->'{field}' AS {alias}")
        else:
            cols.append(f"(data->>'{field}')::{kind} AS {alias}")
    select = ", ".join([*ENVELOPE, *cols])
    return (
        f"CREATE OR REPLACE VIEW {schema}.{view_name(type_)} AS SELECT {select} "
        f"FROM {schema}.events WHERE type = '{type_}'"
    )


def fixed_views(schema: str) -> list[str]:
    """The views that do not depend on the catalogue."""
    s = schema
    calls = "e.data->'usage'->'calls'"
    return [
        f"""CREATE OR REPLACE VIEW {s}.v_events AS SELECT seq, id, type,
            regexp_replace(type, '^dev[.]agentos[.](.*)[.]v[0-9]+$', '\\1') AS name, time, tenant, source, subject,
            correlationid, causationid, principal, traceparent, trace_id, agent, task_id, goal_id, models, tools,
            cost_usd, tokens, tags, policy_version, data FROM {s}.events""",
        f"""CREATE OR REPLACE VIEW {s}.v_model_calls AS SELECT e.seq, e.id AS event_id, e.type, e.time, e.tenant,
            coalesce(e.agent, e.source) AS agent, e.goal_id, e.task_id, e.correlationid, e.trace_id,
            c.n AS call_no, c.call->>'model' AS model, (c.call->>'ok')::boolean AS ok,
            coalesce((c.call->>'input_tokens')::bigint, 0) AS input_tokens,
            coalesce((c.call->>'output_tokens')::bigint, 0) AS output_tokens,
            coalesce((c.call->>'cost_usd')::float8, 0) AS cost_usd,
            (c.call->>'latency_ms')::float8 AS latency_ms, c.call->>'error' AS error
            FROM {s}.events e CROSS JOIN LATERAL jsonb_array_elements(
                CASE WHEN jsonb_typeof({calls}) = 'array' THEN {calls} ELSE '[]'::jsonb END
            ) WITH ORDINALITY AS c(call, n)
            WHERE e.models <> '{{}}'""",
        f"""CREATE OR REPLACE VIEW {s}.v_goal_costs AS SELECT tenant, goal_id, agent, model, count(*) AS calls,
            sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
            sum(input_tokens + output_tokens) AS tokens, sum(cost_usd) AS cost_usd,
            min(time) AS first_call, max(time) AS last_call
            FROM {s}.v_model_calls GROUP BY tenant, goal_id, agent, model""",
    ]


async def _create(conn: Connection, schema: str, sql: str) -> None:
    try:
        async with conn.transaction():
            await conn.execute(sql)
    except asyncpg.InvalidTableDefinitionError:  # columns changed: replace the view outright
        name = sql.split(" VIEW ", 1)[1].split(" AS ", 1)[0]
        await conn.execute(f"DROP VIEW IF EXISTS {name} CASCADE")
        await conn.execute(sql)


async def create_views(pool: asyncpg.Pool, schema: str) -> list[str]:
    """(Re)create every view; returns their names."""
    statements = fixed_views(schema) + [type_view_sql(schema, t, m) for t, m in sorted(CATALOGUE.items())]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"agentos-audit-views-{schema}")
        await conn.execute(personal_function_sql(schema))
        for sql in statements:
            await _create(conn, schema, sql)
    return [sql.split(" VIEW ", 1)[1].split(" AS ", 1)[0].strip() for sql in statements]


async def grant_analyst(pool: asyncpg.Pool, schema: str) -> bool:
    """Create the read-only ``agentos_analyst`` role if needed and let it read the schema.

    It is a NOLOGIN role: grant it to the people who log in (``GRANT agentos_analyst TO alice``).
    Returns False (and logs why) when this database user may not manage roles.
    """
    statements = [
        f"""DO $$ BEGIN CREATE ROLE {ANALYST_ROLE} NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$""",
        f"ALTER ROLE {ANALYST_ROLE} SET default_transaction_read_only = on",
        f"GRANT USAGE ON SCHEMA {schema} TO {ANALYST_ROLE}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {ANALYST_ROLE}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {ANALYST_ROLE}",
    ]
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('agentos-audit-analyst-role'))")
            for sql in statements:
                await conn.execute(sql)
    except asyncpg.InsufficientPrivilegeError as exc:
        log.warning("audit: cannot set up the %s role (%s); analysts need another login", ANALYST_ROLE, exc)
        return False
    return True


__all__ = ["ANALYST_ROLE", "create_views", "fixed_views", "grant_analyst", "sql_kind", "type_view_sql", "view_name"]
