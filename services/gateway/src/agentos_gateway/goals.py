"""``POST /goals`` and ``GET /goals/{id}``: submit a goal, and read its status back from the log.

The status is folded, read-only, from the goal's events in ``AGENTOS_EVENTS`` (everything whose
``correlationid`` is the goal id), starting where the goal was stored: the gateway indexes each
goal it publishes (stream sequence, tenant) in the ``AGENTOS_GATEWAY_GOALS`` bucket; a goal
submitted elsewhere is found from the time in its UUIDv7 id. A scan reads at most
:data:`MAX_SCAN` events or :data:`SCAN_BUDGET_S` seconds and says so (``complete: false``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.errors
import nats.js.errors
from agentos_kernel import Bus
from agentos_kernel.fleet import read_fleet
from agentos_schemas import EVENTS_STREAM, Event, codec, derived_event_id, id_time, new_event_id
from agentos_schemas.events import (
    GoalCompleted,
    GoalEscalated,
    GoalFailed,
    GoalHeld,
    GoalPlanned,
    GoalSubmitted,
    Limits,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
)
from nats.js import api
from pydantic import BaseModel, ConfigDict, Field

from agentos_gateway.kv import safe_key
from agentos_gateway.problems import Problem

MAX_SCAN = 20_000
SCAN_BUDGET_S = 3.0


class GoalRequest(BaseModel):
    """The body of ``POST /goals``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    text: str = Field(min_length=1, max_length=20_000)
    """The goal in natural language."""
    workflow: str | None = None
    """A declared workflow to run instead of the LLM planner (refused if no orchestrator declared
    it, or if a capability its steps need is not served by any registered agent)."""
    capability: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    """The capability the goal's intent needs (e.g. ``triage``): its plan gives the work to an
    agent with it. Refused unless a registered agent has it; the problem lists the known ones."""
    limits: Limits = Field(default_factory=Limits)
    inputs: dict[str, Any] = Field(default_factory=dict)
    tenant: str | None = None
    """Tenant (default: the key's tenant, else the gateway's)."""


def goal_event(
    request: GoalRequest,
    *,
    tenant: str,
    principal: str,
    idempotency_key: str | None,
    traceparent: str | None = None,
) -> Event[GoalSubmitted]:
    """The ``goal.submitted`` event; with an idempotency key its ids derive from it (no second goal)."""
    goal_id = derived_event_id("goal", principal, idempotency_key) if idempotency_key else new_event_id()
    data = GoalSubmitted(
        goal_id=goal_id,
        text=request.text,
        workflow=request.workflow,
        inputs=request.inputs,
        limits=request.limits,
        capability=request.capability,
    )
    return submitted_event(data, tenant=tenant, principal=principal, traceparent=traceparent)


async def check_servable(bus: Bus, request: GoalRequest) -> None:
    """Refuse (422, listing what is known) a goal naming a capability or workflow the fleet, as
    the log states it (:mod:`agentos_kernel.fleet`), does not have."""
    if request.capability is None and request.workflow is None:
        return
    refusal = (await read_fleet(bus)).refusal(capability=request.capability, workflow=request.workflow)
    if refusal is not None:
        field = "capability" if refusal.code == "unknown_capability" else "workflow"
        known: dict[str, Any] = {
            "field": field,
            "detail": refusal.detail,
            "known_capabilities": list(refusal.capabilities),
        }
        if refusal.workflows:
            known["known_workflows"] = list(refusal.workflows)
        raise Problem(422, refusal.code, refusal.detail, errors=[known], dlq=False)


def submitted_event(
    data: GoalSubmitted, *, tenant: str, principal: str, traceparent: str | None = None
) -> Event[GoalSubmitted]:
    """Wrap a ``goal.submitted`` payload: the goal id is also the event id and the correlation id."""
    return Event(
        data=data,
        id=data.goal_id,
        source="gateway",
        type=data.ce_type(),
        tenant=tenant,
        subject=f"goal/{data.goal_id}",
        dataschema=data.dataschema(),
        correlationid=data.goal_id,
        principal=principal,
        traceparent=traceparent,
    )


async def _start(bus: Bus, goals_kv: Any, goal_id: str, tenant: str | None) -> tuple[str, dict[str, Any]] | None:
    """(tenant, deliver options) where the goal's events begin, or None if it is unknown."""
    try:
        entry = await goals_kv.get(safe_key(goal_id))
        record = json.loads(entry.value or b"{}")
        return record["tenant"], {
            "deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE,
            "opt_start_seq": int(record["seq"]),
        }
    except (nats.js.errors.KeyNotFoundError, KeyError, ValueError):
        pass
    started = id_time(goal_id)
    if started is None:
        return None
    return tenant or bus.settings.tenant, {
        "deliver_policy": api.DeliverPolicy.BY_START_TIME,
        "opt_start_time": started.isoformat(),
    }


async def goal_events(bus: Bus, goals_kv: Any, goal_id: str, tenant: str | None) -> tuple[list[Event[Any]], bool]:
    """The goal's stored events in log order, and whether the scan reached the end of the log."""
    where = await _start(bus, goals_kv, goal_id, tenant)
    if where is None or (tenant is not None and where[0] != tenant):
        return [], True
    goal_tenant, options = where
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
        filter_subject=f"agentos.{goal_tenant}.>",
        **options,
    )
    psub = await bus.js.pull_subscribe(subject="", stream=EVENTS_STREAM, config=config)
    loop = asyncio.get_running_loop()
    deadline, out, seen = loop.time() + SCAN_BUDGET_S, [], 0
    try:
        pending = min((await psub.consumer_info()).num_pending or 0, MAX_SCAN)
        while seen < pending and loop.time() < deadline:
            try:
                msgs = await psub.fetch(min(256, pending - seen), timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for msg in msgs:
                seen += 1
                try:
                    event = await bus.decode(msg.data, msg.headers)
                except codec.DecodeError:
                    continue
                if event.correlationid == goal_id:
                    out.append(event)
    finally:
        await psub.unsubscribe()
    return out, seen >= pending and pending < MAX_SCAN


def fold(goal_id: str, events: list[Event[Any]]) -> dict[str, Any] | None:
    """The status document of a goal from its events; None if it was never submitted."""
    doc: dict[str, Any] = {
        "goal_id": goal_id,
        "status": None,
        "events": len(events),
        "plan_revision": None,
        "steps": 0,
        "tasks_completed": 0,
        "tasks_failed": 0,
    }
    for event in events:
        d = event.data
        doc["updated_at"] = event.time.isoformat() if event.time else None
        if isinstance(d, GoalSubmitted):
            doc.update(
                status="submitted",
                text=d.text,
                workflow=d.workflow,
                tenant=event.tenant,
                submitted_at=doc["updated_at"],
            )
        elif isinstance(d, GoalPlanned):
            doc.update(status="running", plan_revision=d.revision, steps=len(d.steps))
        elif isinstance(d, TaskAssigned) and doc["status"] == "held":
            doc["status"] = "running"  # the held work found its agent
        elif isinstance(d, TaskCompleted):
            doc["tasks_completed"] += 1
        elif isinstance(d, TaskFailed):
            doc["tasks_failed"] += 1
        elif isinstance(d, GoalCompleted):
            doc.update(status="completed", result=d.result, cost_usd=d.cost_usd, tokens=d.tokens)
        elif isinstance(d, GoalFailed):
            doc.update(status="failed", failure={"code": d.code, "reason": d.reason}, cost_usd=d.cost_usd)
        elif isinstance(d, GoalEscalated):
            doc.update(status="escalated", escalation={"to": d.to, "reason": d.reason})
        elif isinstance(d, GoalHeld):
            doc.update(status="held", held={"capability": d.capability, "step_id": d.step_id, "reason": d.reason})
    return doc if doc["status"] is not None else None
