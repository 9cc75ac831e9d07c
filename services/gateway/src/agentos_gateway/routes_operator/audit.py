"""Analysts' questions, answered by the audit service (``agentosrpc.audit.query|trace``); the
gateway never reads the projection itself. Pages are bounded (``limit`` ≤ 500, keyset ``cursor``)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Literal

from agentos_schemas import rpc as r
from fastapi import FastAPI, Query
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from agentos_gateway.auth import Principal
from agentos_gateway.gateway import Gateway, json_response
from agentos_gateway.problems import Problem
from agentos_gateway.routes_operator.common import AUDIT_TIMEOUT_S, Problems, ask, invalid, read, tenant_of

CSV_OK = {
    200: {
        "description": "Rows (JSON), or CSV with `format=csv`",
        "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}},
    }
}


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def to_csv(rows: tuple[dict[str, Any], ...]) -> str:
    """Rows as CSV with a header line; lists joined with ", " (as `agentos audit query --format csv`)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _audit_problem(code: str, error: str | None, service_reply: str) -> Problem:
    if code == "invalid":
        return Problem(400, "invalid_filter", error or "invalid request", dlq=False)
    if code == "not_found":
        return Problem(404, "unknown_goal", error or "not found", dlq=False)
    return Problem(502, "audit_error", f"the audit service failed on {service_reply}: {error}", dlq=False)


async def query_page(gw: Gateway, request: Request, filters: dict[str, Any], fmt: str) -> Response:
    """One page of ``agentos audit query`` as JSON or CSV; the next page's link in ``Link``."""
    try:
        query = r.AuditQuery(**filters)
    except ValidationError as exc:
        raise invalid("invalid_filter", "the audit query is invalid", exc) from None
    reply = await ask(gw, r.AUDIT_QUERY, query, r.AuditQueryReply, "audit", AUDIT_TIMEOUT_S)
    if reply.code != "ok":
        raise _audit_problem(reply.code, reply.error, "a query")
    headers = {}
    if reply.next_cursor:
        headers["Link"] = f'<{request.url.include_query_params(cursor=reply.next_cursor)}>; rel="next"'
    if fmt == "csv":
        return Response(to_csv(reply.rows), media_type="text/csv; charset=utf-8", headers=headers)
    return json_response(
        {"rows": list(reply.rows), "count": len(reply.rows), "next_cursor": reply.next_cursor}, headers=headers
    )


async def trace(gw: Gateway, goal_id: str, tenant: str | None, max_events: int) -> Response:
    """``agentos audit trace`` of one goal."""
    try:
        asked = r.AuditTrace(goal_id=goal_id, tenant=tenant, max_events=max_events)
    except ValidationError as exc:
        raise invalid("invalid_filter", "the trace request is invalid", exc) from None
    reply = await ask(gw, r.AUDIT_TRACE, asked, r.AuditTraceReply, "audit", AUDIT_TIMEOUT_S)
    if reply.code != "ok":
        raise _audit_problem(reply.code, reply.error, "a trace")
    return json_response(reply.model_dump(mode="json", exclude={"code", "error"}))


async def _read_page(gw: Gateway, request: Request, filters: dict[str, Any], tenant: str | None, fmt: str) -> Response:
    """:func:`query_page` for the key that asks, within the tenant it may read (:func:`tenant_of`)."""

    async def work(who: Principal) -> Response:
        return await query_page(gw, request, filters | {"tenant": tenant_of(who, tenant)}, fmt)

    return await read(gw, request, "audit.read", work)


def add_audit_routes(app: FastAPI, gw: Gateway, problems: Problems) -> None:
    """``GET /audit/query`` and ``GET /audit/trace/{goal_id}``."""
    _add_query_route(app, gw, problems)
    _add_trace_route(app, gw, problems)


def _add_query_route(app: FastAPI, gw: Gateway, problems: Problems) -> None:
    @app.get(
        "/audit/query",
        responses=CSV_OK | problems,
        tags=["analyst"],
        summary="Events matching every filter given, newest first",
    )
    async def audit_query(
        request: Request,
        agent: str | None = Query(None, description="Agent name"),
        type: str | None = Query(None, description="Event type: task.completed or the full type"),
        since: str | None = Query(None, description="From: 7d, 24h, 30m or an ISO date/time"),
        until: str | None = Query(None, description="Before: 7d, 24h, 30m or an ISO date/time"),
        goal: str | None = Query(None, description="Goal id (goal_id or correlation id)"),
        tool: str | None = Query(None, description="A tool the event names"),
        model: str | None = Query(None, description="A model the event's usage names"),
        tag: str | None = Query(None, description="Classification tag, e.g. personal_data, pii:email"),
        tenant: str | None = Query(None, description="Only this tenant (a tenant-bound key: its own)"),
        limit: int = Query(100, description=f"Most rows in this page (1–{r.AUDIT_MAX_ROWS})"),
        cursor: str | None = Query(None, description="`next_cursor` of the previous page"),
        format: Literal["json", "csv"] = Query("json", description="json or csv"),
    ) -> Response:
        """What `agentos audit query` answers, one bounded page at a time: JSON ``{rows, count,
        next_cursor}`` or CSV (next page in the ``Link: <…>; rel="next"`` header). 400 `invalid_filter`
        for a filter that cannot hold (bad time, unknown event type, limit out of range, bad cursor)."""
        filters = {
            "agent": agent,
            "type": type,
            "since": since,
            "until": until,
            "goal": goal,
            "tool": tool,
            "model": model,
            "tag": tag,
            "limit": limit,
            "cursor": cursor,
        }
        return await _read_page(gw, request, filters, tenant, format)


def _add_trace_route(app: FastAPI, gw: Gateway, problems: Problems) -> None:
    @app.get(
        "/audit/trace/{goal_id}",
        responses=problems,
        tags=["analyst"],
        summary="A goal's events as a causal tree, and per task what its agent saw and used",
    )
    async def audit_trace(
        goal_id: str,
        request: Request,
        tenant: str | None = Query(None, description="Only this tenant"),
        max_events: int = Query(1000, description=f"At most this many events (1–{r.AUDIT_MAX_TRACE_EVENTS})"),
    ) -> Response:
        """What `agentos audit trace` shows: ``events`` in stream order, each with its ``parent_id`` (its
        cause) and ``children``; ``roots``; ``tasks`` (charter, memory, context tokens, models, tokens,
        cost, trace id, outcome); ``truncated`` when the goal has more events. 404 `unknown_goal`."""
        return await read(gw, request, "audit.read", lambda who: trace(gw, goal_id, tenant_of(who, tenant), max_events))
