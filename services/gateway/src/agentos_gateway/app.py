"""The gateway's ASGI app (FastAPI): CloudEvents ingress, goals, operator and analyst endpoints
(the package :mod:`agentos_gateway.routes_operator`), health; OpenAPI at /openapi.json and /docs.

Every error is ``application/problem+json`` (see :mod:`agentos_gateway.problems`); which role
may call which endpoint is in :mod:`agentos_gateway.auth`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from agentos_kernel.exceptions import AgentOSError, describe
from agentos_schemas.envelope import envelope_json_schema
from agentos_schemas.subjects import NamingError, check_token
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from agentos_gateway import binding, openapi, routes_ingress, routes_operator
from agentos_gateway.auth import Principal, check_tenant
from agentos_gateway.binding import is_json, media_type
from agentos_gateway.gateway import Gateway, json_response
from agentos_gateway.goals import GoalRequest, check_servable, fold, goal_event, goal_events
from agentos_gateway.mcp_server.http import add_mcp_routes
from agentos_gateway.problems import PROBLEM_JSON, Problem, internal_error, refuse_nul_parameters

log = logging.getLogger("agentos.gateway")
DOCS_ASSETS = "/docs-assets"
DESCRIPTION = """HTTP ingress of AgentOS.

* `POST /events` takes CloudEvents 1.0 in binary, structured and batch mode and publishes them to
  the event log: catalogue types validated against their payload, foreign types kept verbatim
  (`ingress.raw.<tenant>`); a batch is answered per event.
* `POST /goals` submits a goal; `GET /goals/{id}` folds its status from the log.
* `POST /webhooks/{source}` takes Standard Webhooks-signed deliveries and maps them to events.
* `POST /ingest/{source}` and `POST /mappings/{source}/preview` map vendor payloads with an API key.
* Operators: `GET /approvals`, `POST /approvals/{id}/approve|reject`, `POST /tasks/{id}/takeover`,
  `GET|POST /halts`, `DELETE /halts/{scope}/{target}` (kill switches), `GET /budgets`.
* Analysts: `GET /audit/query` (JSON or CSV, paged) and `GET /audit/trace/{goal_id}`.
* `/mcp`: the same goals, approvals, kill switches and audit as MCP tools (streamable HTTP, the
  same keys and roles; docs/mcp.md).

Authenticate with `Authorization: Bearer <key>` (or `X-API-Key`). Write endpoints accept an
`Idempotency-Key`. Errors are RFC 9457 problem documents; rejected payloads are kept in the DLQ.
"""

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM_JSON: {"schema": {"type": "object"}}}}
    for status, text in {
        400: "Malformed request",
        401: "Missing or bad credentials",
        403: "Role or tenant not allowed",
        413: "Body too large",
        404: "Unknown goal, approval or task",
        409: "Conflict: the approval is already decided, or this person already voted",
        415: "Not a CloudEvent content type",
        422: "Unknown type, schema failure, unmappable payload, invalid body",
        429: "Rate limited",
        502: "A service answered with an error",
        503: "Event log or the answering service unavailable",
    }.items()
}
_ENVELOPE = envelope_json_schema()
EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            binding.STRUCTURED: {"schema": _ENVELOPE},
            binding.BATCH: {"schema": {"type": "array", "items": _ENVELOPE}},
            "application/json": {"schema": {"type": "object", "description": "binary mode: data, with ce-* headers"}},
        },
    }
}
GOAL_BODY = openapi.json_body(GoalRequest)


def build_app(gw: Gateway) -> FastAPI:
    """The FastAPI app serving ``gw``."""
    # One OTel server span per request; FastAPI's per-operation spans (dependencies, endpoint,
    # serialisation) would triple the tracing cost of every ingested event.
    # Swagger UI and ReDoc from assets shipped in the package, not a CDN: /docs works offline too.
    app = FastAPIOffline(
        title="AgentOS gateway",
        version="1",
        description=DESCRIPTION,
        telemetry={"operation_spans": False},
        static_url=DOCS_ASSETS,
        dependencies=[Depends(refuse_nul_parameters)],
    )
    app.state.gateway = gw
    app.add_exception_handler(Exception, _internal_error)
    app.add_exception_handler(AgentOSError, _agentos_error)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _invalid_parameters)
    _event_routes(app, gw)
    _goal_routes(app, gw)
    routes_ingress.add_routes(app, gw, PROBLEM_RESPONSES)
    routes_operator.add_routes(app, gw, PROBLEM_RESPONSES)
    add_mcp_routes(app, gw)
    _health_routes(app, gw)
    openapi.install(app)
    return app


async def _problem(request: Request, exc: Exception) -> Response:
    """A problem raised before an endpoint runs (a route dependency)."""
    assert isinstance(exc, Problem)
    return exc.response(request.url.path)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug, not the caller's fault: 500, logged and counted (:func:`~agentos_gateway.problems.internal_error`)."""
    return internal_error(request.method, request.url.path, exc)


async def _agentos_error(request: Request, exc: Exception) -> Response:
    """An AgentOS error an endpoint did not turn into a problem itself: the status and code its
    class in the error tree names (:mod:`agentos_kernel.exceptions`), ``Retry-After`` when known."""
    told = describe(exc)
    if told.http_status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, told.message)
    headers = {"Retry-After": str(max(1, math.ceil(told.retry_after_s)))} if told.retry_after_s else None
    return Problem(told.http_status, told.code, told.message, headers=headers, dlq=False).response(request.url.path)


async def _invalid_parameters(request: Request, exc: Exception) -> Response:
    """A query or path parameter of the wrong form: 400 as a problem document (not FastAPI's 422 JSON)."""
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ())) or "<root>", "detail": e.get("msg", "")}
        for e in getattr(exc, "errors", list)()
    ]
    text = "; ".join(f"{e['field']}: {e['detail']}" for e in errors[:5])
    return Problem(
        400, "invalid_parameters", f"the request's parameters are invalid: {text}", errors=errors, dlq=False
    ).response(request.url.path)


def _event_routes(app: FastAPI, gw: Gateway) -> None:
    @app.post(
        "/events",
        status_code=202,
        openapi_extra=EVENTS_BODY,
        responses=PROBLEM_RESPONSES,
        summary="Publish CloudEvents (binary, structured or batch)",
    )
    async def post_events(request: Request, dry_run: bool = False) -> Response:
        """Validate CloudEvents against the catalogue and publish them (202), or with
        ``dry_run=true`` only validate them (200). The event id is the dedup key."""

        return await routes_ingress.events(gw, request, dry_run)


def _goal_request(body: bytes, content_type: str | None) -> GoalRequest:
    ctype = media_type(content_type)
    if ctype and not is_json(ctype):
        raise Problem(415, "unsupported_media_type", f"a goal is JSON (application/json), not {ctype!r}")
    try:
        return GoalRequest.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise Problem(400, "invalid_json", f"body is not valid JSON: {exc.errors()[0]['msg']}") from None
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "<root>", "detail": e["msg"]} for e in exc.errors()]
        text = "; ".join(f"{e['field']}: {e['detail']}" for e in errors[:5])
        raise Problem(422, "invalid_goal", f"the goal request is invalid: {text}", errors=errors) from None


async def _submit_goal(gw: Gateway, request: Request, body: bytes, who: Principal) -> Response:
    goal = _goal_request(body, request.headers.get("content-type"))
    tenant = goal.tenant or who.tenant or gw.tenant
    try:
        check_token("tenant", tenant)
    except NamingError as exc:
        raise Problem(422, "invalid_tenant", str(exc)) from None
    check_tenant(who, tenant)
    await check_servable(gw.bus, goal)
    event = goal_event(
        goal,
        tenant=tenant,
        principal=who.principal,
        idempotency_key=request.headers.get("idempotency-key"),
        traceparent=request.headers.get("traceparent"),
    )
    [result] = await gw.publish([event])
    location = f"/goals/{event.data.goal_id}"
    doc = {
        "goal_id": event.data.goal_id,
        "event_id": event.id,
        "tenant": tenant,
        "duplicate": result["duplicate"],
        "status_url": location,
    }
    return json_response(doc, 202, {"Location": location})


async def _goal_status(gw: Gateway, request: Request, goal_id: str, tenant: str | None) -> Response:
    try:
        who = gw.principal(request, "goals.read")
        tenant = tenant or who.tenant
        if who.tenant is not None:
            check_tenant(who, tenant or who.tenant)
        events, complete = await goal_events(gw.bus, gw.goals_kv, goal_id, tenant)
        doc = fold(goal_id, events)
        if doc is None:
            where = f" for tenant {tenant!r}" if tenant else ""
            raise Problem(404, "unknown_goal", f"no goal {goal_id!r} is in the log{where}", dlq=False)
    except Problem as problem:
        return await gw.reject(request, b"", problem)
    return json_response(doc | {"complete": complete})


def _goal_routes(app: FastAPI, gw: Gateway) -> None:
    @app.post("/goals", status_code=202, openapi_extra=GOAL_BODY, responses=PROBLEM_RESPONSES, summary="Submit a goal")
    async def post_goal(request: Request) -> Response:
        """Publish ``goal.submitted``; 202 with the goal id and its ``Location``. With an
        ``Idempotency-Key`` the goal id derives from the key, so a retry never makes a second goal."""

        async def endpoint(body: bytes, who: Principal) -> Response:
            return await _submit_goal(gw, request, body, who)

        return await gw.handle(request, "goals.write", endpoint)

    @app.get("/goals/{goal_id}", responses=PROBLEM_RESPONSES, summary="A goal's status, folded from the log")
    async def get_goal(goal_id: str, request: Request, tenant: str | None = None) -> Response:
        """The goal's status (submitted, running, held, completed, failed, escalated) and its numbers."""
        return await _goal_status(gw, request, goal_id, tenant)


def _health_routes(app: FastAPI, gw: Gateway) -> None:
    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Response:
        """200 while the process serves requests; ``pid`` says which process answered (with
        ``AGENTOS_GATEWAY_WORKERS`` several serve the port)."""
        return json_response({"status": "ok", "pid": os.getpid()})

    @app.get("/readyz", responses={503: PROBLEM_RESPONSES[503]}, summary="Connected to NATS, streams exist")
    async def readyz() -> Response:
        """200 when NATS is connected and the event and DLQ streams exist; 503 otherwise."""
        ok, why = await gw.ready()
        if not ok:
            return Problem(503, "not_ready", why, dlq=False).response("/readyz")
        return json_response(
            {
                "status": "ready",
                "accepted": gw.accepted,
                "rejected": gw.rejected,
                "dead_lettered": gw.dlq.recorded,
            }
        )
