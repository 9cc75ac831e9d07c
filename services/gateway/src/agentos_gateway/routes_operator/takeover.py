"""A human answers a task: ``agentosrpc.policy.decide`` (``task:takeover``), then ``task.completed``."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import nats.errors
from agentos_kernel.faults import contained
from agentos_schemas import EVENTS_STREAM, Event, codec, derived_event_id
from agentos_schemas import rpc as r
from agentos_schemas.events import TaskAssigned, TaskCompleted
from agentos_schemas.subjects import parse_type
from fastapi import FastAPI
from nats.js import api
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from agentos_gateway.auth import Principal
from agentos_gateway.gateway import Gateway, json_response
from agentos_gateway.openapi import json_body
from agentos_gateway.problems import Problem
from agentos_gateway.routes_operator.common import (
    HUMAN,
    POLICY_TIMEOUT_S,
    Problems,
    acting_user,
    ask,
    parse_body,
    publish,
    tenant_of,
    write,
)

TASK_SCAN_BUDGET_S = 10.0


class TakeoverRequest(BaseModel):
    """The body of ``POST /tasks/{task_id}/takeover``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    answer: dict[str, Any]
    """The human's answer: becomes the task's output (``task.completed``)."""
    user: str | None = Field(default=None, pattern=HUMAN)
    """The human answering (default: the key's name; only an admin key may name someone else)."""
    tenant: str | None = None
    """Look for the task in this tenant only (a tenant-bound key: its own)."""


async def assigned_task(gw: Gateway, task_id: str, tenant: str | None) -> Event[Any] | None:
    """The last ``task.assigned`` of ``task_id`` in the log (read up to the log's end as it is now)."""
    domain, name, _ = parse_type(TaskAssigned.ce_type())
    info = await gw.bus.js.stream_info(EVENTS_STREAM)
    if not info.state.last_seq:
        return None
    sub = await gw.bus.js.subscribe(
        f"agentos.{tenant or '*'}.{domain}.{name}",
        stream=EVENTS_STREAM,
        ordered_consumer=True,
        config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL),
    )
    deadline = time.monotonic() + TASK_SCAN_BUDGET_S
    found: Event[Any] | None = None
    try:
        while True:
            if time.monotonic() > deadline:
                raise Problem(
                    503,
                    "scan_incomplete",
                    f"looking for task {task_id!r} in the log took over "
                    f"{TASK_SCAN_BUDGET_S:.0f}s; name its tenant, or retry",
                    dlq=False,
                )
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                return found
            with contextlib.suppress(codec.DecodeError):
                event = await gw.bus.decode(msg.data, msg.headers)
                if getattr(event.data, "task_id", None) == task_id:
                    found = event
            if msg.metadata.sequence.stream >= info.state.last_seq or msg.metadata.num_pending == 0:
                return found
    finally:  # the answer (or the problem) stands, whatever the unsubscribe meets
        with contained("unsubscribe the takeover's scan of the log", nats.errors.Error, OSError):
            await sub.unsubscribe()


async def _allowed(gw: Gateway, assigned: Event[Any], user: str) -> r.PolicyDecision:
    """The policy's decision on ``user`` taking the task over; 403 ``takeover_denied`` if not allowed."""
    data = assigned.data
    asked = r.PolicyRequest(
        tenant=assigned.tenant,
        principal=f"user:{user}",
        action="outside_action",
        resource="task:takeover",
        task_id=data.task_id,
        goal_id=data.goal_id,
    )
    decision = await ask(gw, r.POLICY_DECIDE, asked, r.PolicyDecision, "policy", POLICY_TIMEOUT_S)
    if decision.decision != "allow":
        raise Problem(403, "takeover_denied", f"takeover denied: {'; '.join(decision.reasons)}", dlq=False)
    return decision


async def take_over(gw: Gateway, request: Request, raw: bytes, who: Principal, task_id: str) -> Response:
    """Find the task, ask the policy, publish the human's ``task.completed`` (one per task and person)."""
    asked = parse_body(TakeoverRequest, raw, request.headers.get("content-type"))
    user = acting_user(who, asked.user)
    tenant = tenant_of(who, asked.tenant)
    assigned = await assigned_task(gw, task_id, tenant)
    if assigned is None:
        where = f" of tenant {tenant!r}" if tenant else ""
        raise Problem(404, "unknown_task", f"no task.assigned for task {task_id!r}{where} in the log", dlq=False)
    decision = await _allowed(gw, assigned, user)
    data = assigned.data
    done = TaskCompleted(
        task_id=task_id, goal_id=data.goal_id, step_id=data.step_id, agent=f"user:{user}", output=asked.answer
    )
    event = gw.bus.new(done, cause=assigned, principal=f"user:{user}", id=derived_event_id("takeover", task_id, user))
    ack = await publish(gw, event)
    return json_response(
        {
            "task_id": task_id,
            "goal_id": data.goal_id,
            "tenant": assigned.tenant,
            "user": user,
            "event_id": event.id,
            "decision_id": decision.decision_id,
            "duplicate": bool(ack.duplicate),
        }
    )


def add_takeover_route(app: FastAPI, gw: Gateway, problems: Problems) -> None:
    """``POST /tasks/{task_id}/takeover``."""

    @app.post(
        "/tasks/{task_id}/takeover",
        responses=problems,
        openapi_extra=json_body(TakeoverRequest),
        tags=["operator"],
        summary="Answer a task yourself (takeover)",
    )
    async def takeover(task_id: str, request: Request) -> Response:
        """The policy decides whether the human may take the task over (``task:takeover``); then
        ``task.completed`` is published with their answer as output and ``user:<name>`` as agent and
        principal, and the task's pending approvals are rejected. 403 `takeover_denied`, 404 `unknown_task`.
        One takeover per task and person: a retry publishes nothing new."""
        return await write(gw, request, "tasks.takeover", lambda raw, who: take_over(gw, request, raw, who, task_id))
