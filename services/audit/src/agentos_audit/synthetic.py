"""A large synthetic projection for load tests of the analyst queries (``benchmarks/bench_audit.py``).

Rows are generated inside Postgres (``INSERT … SELECT generate_series``, no client round trips),
into a schema without indexes, which are built afterwards. Shape: 30 events per goal (three tasks
of ten events: assigned, context, started, completed, reviewed, memory, failed, planned, policy,
completed), 10 tenants, 8 agents, 4 models, 5 tools, 2 % of events tagged personal data, a third
of the failures policy denials, times spread evenly over the year before now. No chain rows: this
projection is for queries, not for ``verify``.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from agentos_audit import queries as q
from agentos_audit import schema as sch
from agentos_audit.views import create_views

_TYPES = ", ".join(
    f"'dev.agentos.{n}.v1'"
    for n in (
        "task.assigned",
        "context.ready",
        "task.started",
        "task.completed",
        "task.reviewed",
        "memory.proposed",
        "task.failed",
        "goal.planned",
        "policy.decided",
        "task.completed",
    )
)
_CALLS = "k IN (3, 7, 9)"
_INSERT = f"""
INSERT INTO {{s}}.events (seq, id, type, source, subject, tenant, correlationid, causationid, principal, time,
    traceparent, trace_id, agent, task_id, goal_id, models, tools, cost_usd, tokens, tags, policy_version, data)
SELECT i, 'e' || i, (ARRAY[{_TYPES}])[k + 1], 'synthetic', 'goal/g' || g, 'tenant' || (g % 10), 'g' || g,
    'e' || (i - 1), 'service:synthetic', $3::timestamptz + (i::float8 / $4) * interval '365 days',
    NULL, md5('g' || g),
    CASE WHEN k <> 7 THEN 'agent' || ((g + pos / 10) % 8) END, 'g' || g || '/t' || (pos / 10), 'g' || g,
    CASE WHEN {_CALLS} OR k = 8 THEN ARRAY['model' || (i % 4)] ELSE '{{}}' END,
    CASE WHEN k IN (1, 8) THEN ARRAY['tool' || (g % 5)] ELSE '{{}}' END,
    CASE WHEN {_CALLS} THEN (i % 7) * 0.001 ELSE 0 END,
    CASE WHEN {_CALLS} THEN 100 + i % 500 + i % 400 ELSE 0 END,
    CASE WHEN i % 50 = 0 THEN ARRAY['personal_data', 'pii:email', 'redacted'] ELSE '{{}}' END,
    CASE WHEN k = 8 THEN 'v' || (g % 3) END,
    jsonb_build_object('goal_id', 'g' || g, 'task_id', 'g' || g || '/t' || (pos / 10), 'pad', repeat('lorem ', 40))
    || CASE WHEN {_CALLS} THEN jsonb_build_object('usage', jsonb_build_object('calls', jsonb_build_array(
           jsonb_build_object('model', 'model' || (i % 4), 'ok', true, 'input_tokens', 60 + i % 500,
                              'output_tokens', 40 + i % 400, 'cost_usd', (i % 7) * 0.001))))
       WHEN k = 6 THEN jsonb_build_object('reason', CASE WHEN g % 3 = 0 THEN 'denied by policy: tool not allowed'
                                                         ELSE 'model timeout' END)
       WHEN k = 8 THEN jsonb_build_object('decision', CASE WHEN g % 4 = 0 THEN 'deny' ELSE 'allow' END,
                                          'policy_version', 'v' || (g % 3), 'request',
                                          jsonb_build_object('action', 'tool_call', 'resource', 'tool' || (g % 5)))
       ELSE '{{}}'::jsonb END
FROM generate_series($1::bigint, $2::bigint) AS i,
     LATERAL (SELECT i / 30 AS g, i % 30 AS pos, (i % 30) % 10 AS k) AS x"""


def months_between(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The first instant of every month from ``start`` to ``end``."""
    out, cur = [], start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while cur <= end:
        out.append(cur)
        cur = (cur + dt.timedelta(days=32)).replace(day=1)
    return out


async def generate(pool: asyncpg.Pool, schema: str, rows: int, *, chunk: int = 500_000) -> None:
    """(Re)create ``schema`` holding ``rows`` synthetic events, indexed and analysed, with its views."""
    await sch.drop_schema(pool, schema)
    await sch.migrate_schema(pool, schema, indexes=False)
    end = dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=365)
    async with pool.acquire() as conn:
        await sch.Partitions(schema).ensure(conn, months_between(start, end))
        try:
            await conn.execute("SET synchronous_commit = off")
            for lo in range(1, rows + 1, chunk):
                await conn.execute(_INSERT.replace("{s}", schema), lo, min(rows, lo + chunk - 1), start, rows)
            await conn.execute("SET maintenance_work_mem = '1GB'")
            for statement in sch.INDEXES.format(schema=schema).split(";"):
                if statement.strip() and " chain" not in statement:
                    await conn.execute(statement)
            await conn.execute(f"ANALYZE {schema}.events")
        finally:  # the session settings go with this work, not with the pooled connection
            await conn.execute("RESET synchronous_commit; RESET maintenance_work_mem")
    await create_views(pool, schema)


Query = Callable[[asyncpg.Pool], Awaitable[Any]]


def analyst_queries(schema: str, rnd: random.Random, goals: int) -> dict[str, Query]:
    """The analysts' questions with random arguments, as the CLI asks them."""

    def filters(**kw: Any) -> Query:
        def run(pool: asyncpg.Pool) -> Awaitable[Any]:
            args: dict[str, Any] = {k: v() if callable(v) else v for k, v in kw.items()}
            return q.query_events(pool, schema, q.Filters(**args))

        return run

    week, month, day = q.parse_when("7d"), q.parse_when("30d"), q.parse_when("1d")
    return {
        "query --agent --since 7d": filters(agent=lambda: f"agent{rnd.randrange(8)}", since=week),
        "query --tag personal_data --since 7d": filters(tag="personal_data", since=week),
        "query --tool --since 30d": filters(tool=lambda: f"tool{rnd.randrange(5)}", since=month),
        "query --model --since 7d": filters(model=lambda: f"model{rnd.randrange(4)}", since=week),
        "query --tenant --type --since 1d": filters(
            tenant=lambda: f"tenant{rnd.randrange(10)}", type="task.completed", since=day
        ),
        "cost <goal>": lambda pool: q.cost(pool, schema, f"g{rnd.randrange(goals)}"),
        "personal-data --since 7d": lambda pool: q.personal_data(pool, schema, week),
        "denied --since 7d": lambda pool: q.denied(pool, schema, week),
        "allowed-by <tool> --since 30d": lambda pool: q.allowed_by(
            pool, schema, f"tool{rnd.randrange(5)}", since=month
        ),
        "allowed-by <tool> (all time)": lambda pool: q.allowed_by(pool, schema, f"tool{rnd.randrange(5)}"),
        # "which policy version allowed action Y", asked of one action: any event of a task
        "allowed-by <event id>": lambda pool: q.allowed_by(pool, schema, f"e{rnd.randrange(1, goals * 30)}"),
    }


__all__ = ["analyst_queries", "generate", "months_between"]
