"""Kill switches: keys in the ``AGENTOS_CONTROL`` bucket, written first, then recorded as
``control.halt_requested`` / ``control.resume_requested``."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Literal

import nats.errors
import nats.js.errors
from agentos_kernel import AgentOSError, control
from agentos_schemas.events import HaltRequested, ResumeRequested
from agentos_schemas.events.control import Scope
from agentos_schemas.subjects import NamingError, check_token
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from agentos_gateway.auth import Principal
from agentos_gateway.gateway import Gateway, json_response
from agentos_gateway.openapi import json_body
from agentos_gateway.problems import Problem
from agentos_gateway.routes_operator.common import Problems, parse_body, publish, read, write

_KV_ERRORS = (TimeoutError, nats.errors.Error, nats.js.errors.Error)


class HaltRequest(BaseModel):
    """The body of ``POST /halts``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    scope: Literal["agent", "workflow", "model", "tenant", "all"]
    target: str | None = Field(default=None, max_length=200)
    """The agent (charter name), workflow (goal id), model (alias or litellm string) or tenant;
    none for ``all``."""
    reason: str = Field(default="operator halt", max_length=2000)
    """Why (recorded in the audit trail)."""


def _halt_doc(halt: control.Halt) -> dict[str, Any]:
    return {"key": halt.key, **asdict(halt)}


def halt_scope(scope: Scope, target: str | None) -> tuple[Scope, str]:
    """(scope, target) checked as `agentos halt` checks them; 422 otherwise."""
    target = "*" if scope == "all" else (target or "")
    try:
        control.halt_key(scope, target)
        if scope == "tenant":
            check_token("tenant", target)
    except (AgentOSError, NamingError) as exc:
        raise Problem(422, "invalid_halt", str(exc), dlq=False) from None
    return scope, target


def _may_switch(who: Principal, scope: str, target: str) -> None:
    """A tenant-bound key may only switch its own tenant; agents, models, workflows and ``all``
    reach every tenant."""
    if who.tenant is not None and (scope != "tenant" or target != who.tenant):
        raise Problem(
            403,
            "wrong_tenant",
            f"key {who.name!r} is bound to tenant {who.tenant!r}: it may only "
            f"halt or resume that tenant (scope tenant, target {who.tenant!r})",
            dlq=False,
        )


def _control_problem(exc: Exception) -> Problem:
    return Problem(
        503,
        "control_unavailable",
        f"the AGENTOS_CONTROL bucket is unavailable: {exc!r}; retry",
        headers={"Retry-After": "1"},
        dlq=False,
    )


async def list_halts(gw: Gateway) -> list[control.Halt]:
    """Every switch that is on."""
    try:
        return await control.list_halts(gw.bus.js)
    except _KV_ERRORS as exc:
        raise _control_problem(exc) from None


async def _record(gw: Gateway, data: Any, scope: str, target: str, who: Principal) -> None:
    tenant = target if scope == "tenant" else (who.tenant or gw.tenant)
    subject = f"control/{control.halt_key(scope, target)}"
    await publish(gw, gw.bus.new(data, tenant=tenant, subject=subject, principal=who.principal))


async def halt(gw: Gateway, request: Request, raw: bytes, who: Principal) -> Response:
    """Turn a switch on, then record ``control.halt_requested``; 201 with the switch."""
    asked = parse_body(HaltRequest, raw, request.headers.get("content-type"))
    scope, target = halt_scope(asked.scope, asked.target)
    _may_switch(who, scope, target)
    try:
        switch = await control.set_halt(
            gw.bus.js, control.Halt(scope, target, asked.reason, who.principal, time.time())
        )
    except _KV_ERRORS as exc:
        raise _control_problem(exc) from None
    fact = HaltRequested(
        scope=scope,
        target=target,
        reason=switch.reason,
        requested_by=who.principal,
    )
    await _record(gw, fact, scope, target, who)
    return json_response(_halt_doc(switch), 201)


async def resume(gw: Gateway, who: Principal, scope: Scope, target: str) -> Response:
    """Delete the switch's key (if on), then record ``control.resume_requested``."""
    scope, target = halt_scope(scope, target)
    _may_switch(who, scope, target)
    try:
        was_on = await control.clear_halt(gw.bus.js, scope, target)
    except _KV_ERRORS as exc:
        raise _control_problem(exc) from None
    fact = ResumeRequested(scope=scope, target=target, requested_by=who.principal)
    await _record(gw, fact, scope, target, who)
    return json_response({"key": control.halt_key(scope, target), "was_on": was_on})


def add_halt_routes(app: FastAPI, gw: Gateway, problems: Problems) -> None:
    """``GET`` and ``POST /halts``, ``DELETE /halts/all`` and ``DELETE /halts/{scope}/{target}``."""

    @app.get("/halts", responses=problems, summary="The kill switches that are on", tags=["operator"])
    async def get_halts(request: Request) -> Response:
        """Every switch in ``AGENTOS_CONTROL``: key, scope, target, reason, who and when (what
        `agentos halts` shows)."""

        async def work(who: Principal) -> Response:
            found = await list_halts(gw)
            return json_response({"halts": [_halt_doc(h) for h in found], "count": len(found)})

        return await read(gw, request, "halts.read", work)

    @app.post(
        "/halts",
        status_code=201,
        responses=problems,
        openapi_extra=json_body(HaltRequest),
        tags=["operator"],
        summary="Kill switch: halt an agent, a workflow, a model, a tenant or everything",
    )
    async def post_halt(request: Request) -> Response:
        """Turns the switch on (every replica pauses the work it covers within milliseconds), then
        records ``control.halt_requested`` with the key's principal. 201 with the switch."""
        return await write(gw, request, "halts.write", lambda raw, who: halt(gw, request, raw, who))

    _resume_routes(app, gw, problems)


def _resume_routes(app: FastAPI, gw: Gateway, problems: Problems) -> None:
    @app.delete("/halts/all", responses=problems, tags=["operator"], summary="Lift the switch that halts everything")
    async def delete_halt_all(request: Request) -> Response:
        """Like `agentos resume --all`: paused work carries on. ``was_on`` says whether it was on."""
        return await write(gw, request, "halts.write", lambda raw, who: resume(gw, who, "all", "*"))

    @app.delete(
        "/halts/{scope}/{target:path}",
        responses=problems,
        tags=["operator"],
        summary="Lift a kill switch (agent, workflow, model or tenant)",
    )
    async def delete_halt(
        scope: Literal["agent", "workflow", "model", "tenant"], target: str, request: Request
    ) -> Response:
        """Like `agentos resume --<scope> <target>`: the key is deleted and ``control.resume_requested``
        recorded; paused work carries on. ``was_on`` says whether it was on."""
        return await write(gw, request, "halts.write", lambda raw, who: resume(gw, who, scope, target))
