"""The analysts' questions over request/reply: ``agentosrpc.audit.query`` and ``agentosrpc.audit.trace``.

What ``agentos audit query`` and ``agentos audit trace`` answer, for callers that may not touch the
projection themselves (the gateway's ``GET /audit/…``). Both are bounded: a query page holds at most
:data:`~agentos_schemas.rpc.AUDIT_MAX_ROWS` rows (keyset cursor on ``(time, seq)`` for the next one),
a trace at most :data:`~agentos_schemas.rpc.AUDIT_MAX_TRACE_EVENTS` events, every statement runs under
a ``statement_timeout``, and an answer that would not fit in one NATS message is cut to fit (a query
page then ends early with a cursor; a trace says ``truncated``).

Replicas answer in the queue group ``audit``; each process holds :data:`CONCURRENCY` subscriptions,
so a slow query does not hold up the next one.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from typing import Any

import asyncpg
from agentos_kernel import Bus
from agentos_schemas import rpc as r

from agentos_audit import queries as q
from agentos_audit.render import plain
from agentos_audit.schema import check_schema
from agentos_audit.trace import build_tree, task_summaries

log = logging.getLogger("agentos.audit.rpc")
QUEUE = "audit"
CONCURRENCY = 4
STATEMENT_TIMEOUT_MS = 10_000
_TRACE_COLUMNS = (
    "seq, id, type, time, source, tenant, agent, task_id, goal_id, causationid, correlationid, "
    "trace_id, models, tools, cost_usd, tokens, tags, policy_version, data"
)


class Invalid(ValueError):
    """The caller's request cannot be answered as asked (a bad filter or cursor)."""


# -- cursors ---------------------------------------------------------------------------------------


def encode_cursor(row: dict[str, Any]) -> str:
    """An opaque cursor naming the last row of a page (its time and stream sequence)."""
    raw = json.dumps([row["time"].astimezone(dt.UTC).isoformat(), int(row["seq"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """(time, seq) of a cursor made by :func:`encode_cursor`."""
    try:
        time, seq = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return dt.datetime.fromisoformat(time), int(seq)
    except (ValueError, TypeError) as exc:
        raise Invalid(f"cursor {cursor!r} is not one this service gave out ({exc})") from None


# -- the answers -----------------------------------------------------------------------------------


def filters_of(request: r.AuditQuery) -> q.Filters:
    """The CLI's :class:`~agentos_audit.queries.Filters` for a request; :class:`Invalid` if one is bad."""
    try:
        since, until = q.parse_when(request.since), q.parse_when(request.until)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if request.type is not None and not q.types_named(request.type):
        raise Invalid(
            f"event type {request.type!r} is not in the catalogue (e.g. task.completed, "
            "or a full type dev.agentos.task.completed.v1)"
        )
    if since is not None and until is not None and since >= until:
        raise Invalid(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    return q.Filters(
        tenant=request.tenant,
        agent=request.agent,
        type=request.type,
        since=since,
        until=until,
        goal=request.goal,
        tool=request.tool,
        model=request.model,
        tag=request.tag,
        limit=request.limit,
    )


async def query_page(conn: Any, schema: str, request: r.AuditQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of :func:`queries.query_events` (newest first), and the cursor of the next, if any."""
    filters = filters_of(request)
    where, args = filters.where()
    if request.cursor:
        time, seq = decode_cursor(request.cursor)
        args += [time, seq]
        where += f" AND (time, seq) < (${len(args) - 1}::timestamptz, ${len(args)}::bigint)"
    sql = (
        f"SELECT {q.LIST_COLUMNS} FROM {check_schema(schema)}.events WHERE {where} "
        f"ORDER BY time DESC, seq DESC LIMIT {int(filters.limit) + 1}"
    )
    rows = [dict(x) for x in await conn.fetch(sql, *args)]
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    return rows, (encode_cursor(rows[-1]) if more and rows else None)


async def trace_rows(conn: Any, schema: str, request: r.AuditTrace) -> tuple[list[dict[str, Any]], bool]:
    """The first ``max_events`` rows of :func:`queries.goal_events` (stream order), and whether
    there were more."""
    sql = (
        f"SELECT {_TRACE_COLUMNS} FROM {check_schema(schema)}.events "
        "WHERE (correlationid = $1 OR goal_id = $1) "
        f"AND ($2::text IS NULL OR tenant = $2) ORDER BY seq LIMIT {int(request.max_events) + 1}"
    )
    rows = [dict(x) for x in await conn.fetch(sql, request.goal_id, request.tenant)]
    return rows[: request.max_events], len(rows) > request.max_events


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON-friendly values (times ISO 8601 UTC, arrays as lists, ``extensions`` an object)."""
    out = {k: list(v) if isinstance(v, list | tuple) else plain(v) for k, v in row.items()}
    if isinstance(extensions := out.get("extensions"), str):
        out["extensions"] = json.loads(extensions)
    return out


def trace_reply(goal_id: str, rows: list[dict[str, Any]], truncated: bool) -> r.AuditTraceReply:
    """The causal tree of ``rows`` (:func:`trace.build_tree`) as a flat list of linked events."""
    events: list[r.TraceEvent] = []
    stack = [(node, None) for node in reversed(build_tree(rows))]
    order = {row["id"]: i for i, row in enumerate(rows)}
    while stack:
        node, parent = stack.pop()
        row = node.row
        events.append(
            r.TraceEvent(
                id=row["id"],
                seq=row["seq"],
                type=row["type"],
                time=row["time"],
                parent_id=parent,
                children=tuple(c.row["id"] for c in node.children),
                label=node.label,
                details=tuple(node.details),
                agent=row.get("agent"),
                task_id=row.get("task_id"),
                causationid=row.get("causationid"),
                trace_id=row.get("trace_id"),
                models=tuple(row.get("models") or ()),
                tokens=int(row.get("tokens") or 0),
                cost_usd=float(row.get("cost_usd") or 0.0),
                tags=tuple(row.get("tags") or ()),
            )
        )
        stack.extend((child, row["id"]) for child in reversed(node.children))
    events.sort(key=lambda e: order[e.id])
    roots = tuple(e.id for e in events if e.parent_id is None)
    tasks = tuple(r.TraceTask.model_validate(t) for t in task_summaries(rows))
    return r.AuditTraceReply(goal_id=goal_id, roots=roots, events=tuple(events), tasks=tasks, truncated=truncated)


def _fits(reply: Any, limit: int) -> bool:
    return len(reply.model_dump_json().encode()) <= limit


class AuditRPC:
    """Answers ``audit.query`` and ``audit.trace`` from the projection in ``schema``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        *,
        max_bytes: int,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    ) -> None:
        self.pool = pool
        self.schema = check_schema(schema)
        self.max_bytes = max_bytes
        self.statement_timeout_ms = statement_timeout_ms

    async def _read(self, work: Any) -> Any:
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL statement_timeout = {int(self.statement_timeout_ms)}")
            return await work(conn)

    async def query(self, request: r.AuditQuery) -> r.AuditQueryReply:
        """One page of events matching the request's filters."""
        try:
            rows, cursor = await self._read(lambda conn: query_page(conn, self.schema, request))
        except Invalid as exc:
            return r.AuditQueryReply(code="invalid", error=str(exc))
        except asyncpg.QueryCanceledError:
            return r.AuditQueryReply(
                code="invalid",
                error=f"the query ran over {self.statement_timeout_ms} ms: "
                "narrow it (a goal, an agent, a shorter time range)",
            )
        reply = r.AuditQueryReply(rows=tuple(plain_row(x) for x in rows), next_cursor=cursor)
        while not _fits(reply, self.max_bytes) and len(rows) > 1:
            rows = rows[: len(rows) // 2]
            reply = r.AuditQueryReply(rows=tuple(plain_row(x) for x in rows), next_cursor=encode_cursor(rows[-1]))
        return reply

    async def trace(self, request: r.AuditTrace) -> r.AuditTraceReply:
        """One goal's causal tree and task summaries."""
        try:
            rows, truncated = await self._read(lambda conn: trace_rows(conn, self.schema, request))
        except asyncpg.QueryCanceledError:
            return r.AuditTraceReply(
                goal_id=request.goal_id,
                code="error",
                error=f"reading the trace ran over {self.statement_timeout_ms} ms",
            )
        if not rows:
            where = f" for tenant {request.tenant!r}" if request.tenant else ""
            return r.AuditTraceReply(
                goal_id=request.goal_id,
                code="not_found",
                error=f"no events of goal {request.goal_id!r} in the projection{where}",
            )
        reply = trace_reply(request.goal_id, rows, truncated)
        while not _fits(reply, self.max_bytes) and len(rows) > 1:
            rows = rows[: len(rows) // 2]
            reply = trace_reply(request.goal_id, rows, True)
        return reply


def _query_error(message: str) -> r.AuditQueryReply:
    return r.AuditQueryReply(code="invalid" if message.startswith("invalid request") else "error", error=message)


def _trace_error(message: str) -> r.AuditTraceReply:
    return r.AuditTraceReply(code="invalid" if message.startswith("invalid request") else "error", error=message)


async def serve(bus: Bus, pool: asyncpg.Pool, schema: str, *, concurrency: int = CONCURRENCY) -> list[Any]:
    """Subscribe the answers (``concurrency`` members per subject in queue group ``audit``); returns
    the subscriptions, to unsubscribe on stop."""
    answers = AuditRPC(pool, schema, max_bytes=max(4096, int(bus.nc.max_payload) - 4096))
    subs = []
    for _ in range(concurrency):
        subs.append(await bus.serve(r.AUDIT_QUERY, r.AuditQuery, answers.query, queue=QUEUE, error_reply=_query_error))
        subs.append(await bus.serve(r.AUDIT_TRACE, r.AuditTrace, answers.trace, queue=QUEUE, error_reply=_trace_error))
    return subs


__all__ = [
    "CONCURRENCY",
    "QUEUE",
    "AuditRPC",
    "Invalid",
    "decode_cursor",
    "encode_cursor",
    "filters_of",
    "query_page",
    "serve",
    "trace_reply",
    "trace_rows",
]
