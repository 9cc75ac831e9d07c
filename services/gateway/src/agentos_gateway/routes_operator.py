"""Operator and analyst endpoints: what `agentos approvals|approve|reject|takeover|halt|resume|budget`
and `agentos audit query|trace` do, over HTTP.

- Approvals, votes and budgets go through the policy service's request/reply subjects
  (``agentosrpc.policy.approval|approvals|vote|budget``), takeover through ``agentosrpc.policy.decide``
  and then ``task.completed`` with the human as principal — the same subjects the CLI uses, so the
  two-person rule, the policy's human roles and the deadlines apply unchanged.
- Kill switches are keys in the ``AGENTOS_CONTROL`` bucket (:mod:`agentos_kernel.control`), written
  first and then recorded as ``control.halt_requested`` / ``control.resume_requested``.
- Audit questions go to the audit service (``agentosrpc.audit.query|trace``); the gateway never reads
  the projection itself. Pages are bounded (``limit`` ≤ 500, keyset ``cursor``).

**Who is acting.** A vote or takeover names the human (``user``) as the policy knows them. A key
acts as the human of its own name: ``user`` may be left out, and naming someone else is 403
``wrong_user``. Only an ``admin`` key may act for another person (as the CLI's ``--as`` does), so
with per-person operator keys the two-person rule needs two keys.

Every refusal is a problem document; none is dead-lettered (these are not payloads for the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import time
from dataclasses import asdict
from typing import Any, Literal, TypeVar

import nats.errors
import nats.js.errors
from agentos_kernel import AgentOSError, BusUnavailable, control
from agentos_schemas import EVENTS_STREAM, Event, codec, derived_event_id
from agentos_schemas import rpc as r
from agentos_schemas.events import HaltRequested, ResumeRequested, TaskAssigned, TaskCompleted
from agentos_schemas.subjects import NamingError, check_token, parse_type
from fastapi import FastAPI, Query
from nats.js import api
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from agentos_gateway.auth import Principal, check_tenant
from agentos_gateway.binding import is_json, media_type
from agentos_gateway.gateway import Gateway, json_response
from agentos_gateway.problems import Problem, bus_unavailable

M = TypeVar("M", bound=BaseModel)
POLICY_TIMEOUT_S = 5.0
AUDIT_TIMEOUT_S = 15.0
TASK_SCAN_BUDGET_S = 10.0
HUMAN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$"
NO_POLICY = "no policy loaded"


# -- request bodies --------------------------------------------------------------------------------


class VoteRequest(BaseModel):
    """The body of ``POST /approvals/{id}/approve`` and ``…/reject``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    user: str | None = Field(default=None, pattern=HUMAN)
    """The human voting, as named in the policy's ``humans`` (default: the key's name; only an
    admin key may name someone else)."""
    reason: str = Field(default="", max_length=2000)
    """Why (kept in the log); required to reject."""


class TakeoverRequest(BaseModel):
    """The body of ``POST /tasks/{task_id}/takeover``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    answer: dict[str, Any]
    """The human's answer: becomes the task's output (``task.completed``)."""
    user: str | None = Field(default=None, pattern=HUMAN)
    """The human answering (default: the key's name; only an admin key may name someone else)."""
    tenant: str | None = None
    """Look for the task in this tenant only (a tenant-bound key: its own)."""


class HaltRequest(BaseModel):
    """The body of ``POST /halts``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    scope: Literal["agent", "workflow", "model", "tenant", "all"]
    target: str | None = Field(default=None, max_length=200)
    """The agent (charter name), workflow (goal id), model (alias or litellm string) or tenant;
    none for ``all``."""
    reason: str = Field(default="operator halt", max_length=2000)
    """Why (recorded in the audit trail)."""


def _body(model: type[M], body: bytes, content_type: str | None) -> M:
    ctype = media_type(content_type)
    if ctype and not is_json(ctype):
        raise Problem(
            415, "unsupported_media_type", f"send JSON (application/json), not {ctype!r}", dlq=False
        )
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise Problem(
                400, "invalid_json", f"body is not valid JSON: {exc.errors()[0]['msg']}", dlq=False
            ) from None
        raise _invalid("invalid_body", "the request body is invalid", exc, 422) from None


def _invalid(code: str, what: str, exc: ValidationError, status: int = 400) -> Problem:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "<root>", "detail": e["msg"]} for e in exc.errors()
    ]
    text = "; ".join(f"{e['field']}: {e['detail']}" for e in errors[:5])
    return Problem(status, code, f"{what}: {text}", errors=errors, dlq=False)


def acting_user(who: Principal, user: str | None) -> str:
    """The human a vote or takeover is by (see the module docs)."""
    if user is None or user == who.name:
        return who.name
    if "admin" in who.roles:
        return user
    raise Problem(
        403,
        "wrong_user",
        f"key {who.name!r} acts as {who.name!r}; only an admin key may act for {user!r}",
        dlq=False,
    )


def _tenant_of(who: Principal, tenant: str | None) -> str | None:
    """The tenant a read is limited to: the asked one, and a tenant-bound key's own at most."""
    if who.tenant is None:
        return tenant
    check_tenant(who, tenant or who.tenant)
    return who.tenant


async def ask(
    gw: Gateway, subject: str, payload: BaseModel, reply: type[M], service: str, timeout: float
) -> M:
    """A request to a service; 503 when nobody answers, 502 when the answer is unreadable."""
    try:
        return await gw.bus.request(subject, payload, reply, timeout=timeout)
    except (BusUnavailable, nats.errors.Error) as exc:
        raise Problem(
            503,
            f"{service}_unavailable",
            f"the {service} service did not answer on {subject} ({exc}); is it running? retry",
            headers={"Retry-After": "2"},
            dlq=False,
        ) from None
    except ValidationError as exc:
        raise Problem(
            502,
            f"{service}_bad_reply",
            f"the {service} service's answer is not a {reply.__name__}: {exc.errors()[0]['msg']}",
            dlq=False,
        ) from None


async def _read(gw: Gateway, request: Request, action: str, work: Any) -> Response:
    """A read endpoint: authenticate, run, turn a problem into its response."""
    try:
        who = gw.principal(request, action)
        return await work(who)  # type: ignore[no-any-return]
    except Problem as problem:
        problem.dlq = False
        return await gw.reject(request, b"", problem)


async def _write(gw: Gateway, request: Request, action: str, work: Any) -> Response:
    """A write endpoint through the gateway's pipeline (body limit, ``Idempotency-Key``); its
    refusals are never dead-lettered."""

    async def endpoint(body: bytes, who: Principal) -> Response:
        try:
            return await work(body, who)  # type: ignore[no-any-return]
        except Problem as problem:
            problem.dlq = False
            raise

    return await gw.handle(request, action, endpoint)


# -- approvals -------------------------------------------------------------------------------------


async def _approval(gw: Gateway, who: Principal, approval_id: str) -> r.ApprovalInfo:
    reply = await ask(
        gw,
        r.POLICY_APPROVAL,
        r.ApprovalQuery(approval_id=approval_id),
        r.ApprovalReply,
        "policy",
        POLICY_TIMEOUT_S,
    )
    info = reply.approval
    if info is None or (who.tenant is not None and info.tenant != who.tenant):
        if reply.error and not reply.error.startswith("no approval"):
            raise Problem(502, "policy_error", f"the policy service failed: {reply.error}", dlq=False)
        raise Problem(404, "unknown_approval", f"no approval {approval_id!r}", dlq=False)
    return info


def _state(info: r.ApprovalInfo) -> str:
    if info.status != "pending":
        return info.status
    return f"pending ({len(info.approved_by)} of {info.needed} approvals)"


def vote_outcome(reply: r.ApprovalReply, approval_id: str, user: str) -> Response:
    """The HTTP answer to the policy service's reply to a vote (what the CLI prints, as JSON or a problem)."""
    info = reply.approval
    if reply.error is None and info is not None:
        return json_response(
            {"approval": info.model_dump(mode="json"), "state": _state(info), "voted_by": user}
        )
    error = reply.error or "no answer"
    if info is None:
        if error.startswith("no approval"):
            raise Problem(404, "unknown_approval", error, dlq=False)
        raise Problem(502, "policy_error", f"the policy service failed: {error}", dlq=False)
    if info.status != "pending":
        raise Problem(409, "approval_decided", error, dlq=False)
    if user in info.approved_by or info.rejected_by == user:
        raise Problem(409, "duplicate_vote", error, dlq=False)
    if error == NO_POLICY:
        raise Problem(
            503,
            "no_policy",
            "the policy service has no policy loaded",
            dlq=False,
            headers={"Retry-After": "2"},
        )
    raise Problem(403, "not_an_approver", error, dlq=False)


def _approval_routes(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    @app.get("/approvals", responses=problems, summary="Approvals waiting for a human", tags=["operator"])
    async def list_approvals(
        request: Request, tenant: str | None = None, status: r.ApprovalStatusName = "pending"
    ) -> Response:
        """Approvals in ``status`` (default pending), every tenant unless ``tenant`` is given (a
        tenant-bound key sees its own). What `agentos approvals` lists."""

        async def work(who: Principal) -> Response:
            query = r.ApprovalList(tenant=_tenant_of(who, tenant), status=status)
            reply = await ask(gw, r.POLICY_APPROVALS, query, r.ApprovalListReply, "policy", POLICY_TIMEOUT_S)
            if reply.error:
                raise Problem(502, "policy_error", f"the policy service failed: {reply.error}", dlq=False)
            return json_response(
                {
                    "approvals": [a.model_dump(mode="json") for a in reply.approvals],
                    "count": len(reply.approvals),
                }
            )

        return await _read(gw, request, "approvals.read", work)

    @app.get(
        "/approvals/{approval_id}",
        responses=problems,
        summary="One approval and where it stands",
        tags=["operator"],
    )
    async def get_approval(approval_id: str, request: Request) -> Response:
        """Its risk, votes so far, who may approve, deadline and status; 404 if unknown."""

        async def work(who: Principal) -> Response:
            info = await _approval(gw, who, approval_id)
            return json_response({"approval": info.model_dump(mode="json"), "state": _state(info)})

        return await _read(gw, request, "approvals.read", work)

    for verdict in ("approve", "reject"):
        _vote_route(app, gw, problems, verdict)


def _vote_route(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]], verdict: str) -> None:
    summary = (
        "Approve a pending request (high risk: two different people)"
        if verdict == "approve"
        else "Reject a pending request (the agent is told it was denied)"
    )
    body = {
        "requestBody": {
            "required": verdict == "reject",
            "content": {"application/json": {"schema": VoteRequest.model_json_schema()}},
        }
    }

    async def post_vote(approval_id: str, request: Request) -> Response:
        async def work(raw: bytes, who: Principal) -> Response:
            vote = _body(VoteRequest, raw, request.headers.get("content-type"))
            if verdict == "reject" and not vote.reason.strip():
                raise Problem(
                    422, "reason_required", "a rejection needs a reason (it is kept in the log)", dlq=False
                )
            user = acting_user(who, vote.user)
            if who.tenant is not None:
                await _approval(gw, who, approval_id)
            ballot = r.ApprovalVote(
                approval_id=approval_id,
                user=user,
                verdict=verdict,  # type: ignore[arg-type]
                reason=vote.reason,
            )
            reply = await ask(gw, r.POLICY_VOTE, ballot, r.ApprovalReply, "policy", POLICY_TIMEOUT_S)
            return vote_outcome(reply, approval_id, user)

        return await _write(gw, request, "approvals.vote", work)

    post_vote.__doc__ = (
        f"The human (``user``, default the key's name) {verdict}s; the policy checks they hold a role "
        "allowed for the risk tier and counts each person once. 200 with the approval's state; 403 "
        "`not_an_approver` / `wrong_user`, 404 `unknown_approval`, 409 `duplicate_vote` / `approval_decided`."
    )
    app.post(
        f"/approvals/{{approval_id}}/{verdict}",
        responses=problems,
        summary=summary,
        openapi_extra=body,
        tags=["operator"],
        name=f"{verdict}_approval",
    )(post_vote)


# -- takeover --------------------------------------------------------------------------------------


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
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _takeover_route(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TakeoverRequest.model_json_schema()}},
        }
    }

    @app.post(
        "/tasks/{task_id}/takeover",
        responses=problems,
        openapi_extra=body,
        tags=["operator"],
        summary="Answer a task yourself (takeover)",
    )
    async def takeover(task_id: str, request: Request) -> Response:
        """The policy decides whether the human may take the task over (``task:takeover``); then
        ``task.completed`` is published with their answer as output and ``user:<name>`` as agent and
        principal, and the task's pending approvals are rejected. 403 `takeover_denied`, 404 `unknown_task`.
        One takeover per task and person: a retry publishes nothing new."""

        async def work(raw: bytes, who: Principal) -> Response:
            ask_body = _body(TakeoverRequest, raw, request.headers.get("content-type"))
            user = acting_user(who, ask_body.user)
            tenant = _tenant_of(who, ask_body.tenant)
            assigned = await assigned_task(gw, task_id, tenant)
            if assigned is None:
                where = f" of tenant {tenant!r}" if tenant else ""
                raise Problem(
                    404, "unknown_task", f"no task.assigned for task {task_id!r}{where} in the log", dlq=False
                )
            data = assigned.data
            decision = await ask(
                gw,
                r.POLICY_DECIDE,
                r.PolicyRequest(
                    tenant=assigned.tenant,
                    principal=f"user:{user}",
                    action="outside_action",
                    resource="task:takeover",
                    task_id=task_id,
                    goal_id=data.goal_id,
                ),
                r.PolicyDecision,
                "policy",
                POLICY_TIMEOUT_S,
            )
            if decision.decision != "allow":
                raise Problem(
                    403, "takeover_denied", f"takeover denied: {'; '.join(decision.reasons)}", dlq=False
                )
            done = TaskCompleted(
                task_id=task_id,
                goal_id=data.goal_id,
                step_id=data.step_id,
                agent=f"user:{user}",
                output=ask_body.answer,
            )
            event = gw.bus.new(
                done, cause=assigned, principal=f"user:{user}", id=derived_event_id("takeover", task_id, user)
            )
            ack = await _publish(gw, event)
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

        return await _write(gw, request, "tasks.takeover", work)


async def _publish(gw: Gateway, event: Event[Any]) -> Any:
    try:
        return await asyncio.wait_for(gw.bus.publish(event), timeout=gw.bus.settings.publish_timeout_s)
    except (TimeoutError, BusUnavailable, nats.errors.Error) as exc:
        raise bus_unavailable(exc) from None


# -- kill switches ---------------------------------------------------------------------------------


def _halt_doc(halt: control.Halt) -> dict[str, Any]:
    return {"key": halt.key, **asdict(halt)}


def halt_scope(scope: str, target: str | None) -> tuple[str, str]:
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


async def _bucket(gw: Gateway) -> Any:
    try:
        return await control.open_bucket(gw.bus.js)
    except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
        raise _control_problem(exc) from None


async def list_halts(gw: Gateway) -> list[control.Halt]:
    """Every switch that is on."""
    kv = await _bucket(gw)
    try:
        keys = await kv.keys()
    except (nats.js.errors.NoKeysError, nats.errors.TimeoutError):
        return []
    found = []
    for key in keys:
        with contextlib.suppress(
            nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError, ValueError, KeyError
        ):
            entry = await kv.get(key)
            if entry.value:
                found.append(control.Halt.from_bytes(entry.value, entry.revision))
    return sorted(found, key=lambda h: h.key)


async def _record(gw: Gateway, data: Any, scope: str, target: str, who: Principal) -> None:
    tenant = target if scope == "tenant" else (who.tenant or gw.tenant)
    await _publish(
        gw,
        gw.bus.new(
            data, tenant=tenant, subject=f"control/{control.halt_key(scope, target)}", principal=who.principal
        ),
    )


def _halt_routes(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": HaltRequest.model_json_schema()}},
        }
    }

    @app.get("/halts", responses=problems, summary="The kill switches that are on", tags=["operator"])
    async def get_halts(request: Request) -> Response:
        """Every switch in ``AGENTOS_CONTROL``: key, scope, target, reason, who and when (what
        `agentos halts` shows)."""

        async def work(who: Principal) -> Response:
            found = await list_halts(gw)
            return json_response({"halts": [_halt_doc(h) for h in found], "count": len(found)})

        return await _read(gw, request, "halts.read", work)

    @app.post(
        "/halts",
        status_code=201,
        responses=problems,
        openapi_extra=body,
        tags=["operator"],
        summary="Kill switch: halt an agent, a workflow, a model, a tenant or everything",
    )
    async def post_halt(request: Request) -> Response:
        """Turns the switch on (every replica pauses the work it covers within milliseconds), then
        records ``control.halt_requested`` with the key's principal. 201 with the switch."""

        async def work(raw: bytes, who: Principal) -> Response:
            ask_body = _body(HaltRequest, raw, request.headers.get("content-type"))
            scope, target = halt_scope(ask_body.scope, ask_body.target)
            _may_switch(who, scope, target)
            halt = control.Halt(scope, target, ask_body.reason, who.principal, time.time())
            kv = await _bucket(gw)
            try:
                revision = await kv.put(halt.key, halt.to_bytes())
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                raise _control_problem(exc) from None
            halt = control.Halt(scope, target, halt.reason, halt.by, halt.at, revision)
            await _record(
                gw,
                HaltRequested(
                    scope=scope,  # type: ignore[arg-type]
                    target=target,
                    reason=halt.reason,
                    requested_by=who.principal,
                ),
                scope,
                target,
                who,
            )
            return json_response(_halt_doc(halt), 201)

        return await _write(gw, request, "halts.write", work)

    async def resume(request: Request, scope: str, target: str) -> Response:
        async def work(raw: bytes, who: Principal) -> Response:
            checked = halt_scope(scope, target)
            _may_switch(who, *checked)
            key = control.halt_key(*checked)
            kv = await _bucket(gw)
            was_on = False
            try:
                with contextlib.suppress(nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                    entry = await kv.get(key)
                    was_on = bool(entry and entry.value)
                if was_on:
                    await kv.delete(key)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                raise _control_problem(exc) from None
            await _record(
                gw,
                ResumeRequested(
                    scope=checked[0],  # type: ignore[arg-type]
                    target=checked[1],
                    requested_by=who.principal,
                ),
                *checked,
                who,
            )
            return json_response({"key": key, "was_on": was_on})

        return await _write(gw, request, "halts.write", work)

    @app.delete(
        "/halts/all", responses=problems, tags=["operator"], summary="Lift the switch that halts everything"
    )
    async def delete_halt_all(request: Request) -> Response:
        """Like `agentos resume --all`: paused work carries on. ``was_on`` says whether it was on."""
        return await resume(request, "all", "*")

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
        return await resume(request, scope, target)


# -- budgets ---------------------------------------------------------------------------------------


def _budget_routes(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    @app.get(
        "/budgets",
        responses=problems,
        tags=["operator"],
        summary="Spend against caps (per agent, team and tenant; today and this month)",
    )
    async def get_budgets(request: Request, tenant: str | None = None) -> Response:
        """What `agentos budget` shows: per cap, spent and reserved USD and tokens against the cap."""

        async def work(who: Principal) -> Response:
            reply = await ask(
                gw,
                r.POLICY_BUDGET,
                r.BudgetQuery(tenant=_tenant_of(who, tenant)),
                r.BudgetReport,
                "policy",
                POLICY_TIMEOUT_S,
            )
            if reply.error:
                raise Problem(502, "policy_error", f"the policy service failed: {reply.error}", dlq=False)
            return json_response(reply.model_dump(mode="json", exclude={"error"}))

        return await _read(gw, request, "budgets.read", work)


# -- audit -----------------------------------------------------------------------------------------


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


def _audit_routes(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    csv_ok = {
        200: {
            "description": "Rows (JSON), or CSV with `format=csv`",
            "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}},
        }
    }

    @app.get(
        "/audit/query",
        responses=csv_ok | problems,
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

        async def work(who: Principal) -> Response:
            try:
                query = r.AuditQuery(
                    agent=agent,
                    type=type,
                    since=since,
                    until=until,
                    goal=goal,
                    tool=tool,
                    model=model,
                    tag=tag,
                    tenant=_tenant_of(who, tenant),
                    limit=limit,
                    cursor=cursor,
                )
            except ValidationError as exc:
                raise _invalid("invalid_filter", "the audit query is invalid", exc) from None
            reply = await ask(gw, r.AUDIT_QUERY, query, r.AuditQueryReply, "audit", AUDIT_TIMEOUT_S)
            if reply.code != "ok":
                raise _audit_problem(reply.code, reply.error, "a query")
            headers = {}
            if reply.next_cursor:
                headers["Link"] = (
                    f'<{request.url.include_query_params(cursor=reply.next_cursor)}>; rel="next"'
                )
            if format == "csv":
                return Response(to_csv(reply.rows), media_type="text/csv; charset=utf-8", headers=headers)
            return json_response(
                {"rows": list(reply.rows), "count": len(reply.rows), "next_cursor": reply.next_cursor},
                headers=headers,
            )

        return await _read(gw, request, "audit.read", work)

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

        async def work(who: Principal) -> Response:
            try:
                ask_body = r.AuditTrace(
                    goal_id=goal_id, tenant=_tenant_of(who, tenant), max_events=max_events
                )
            except ValidationError as exc:
                raise _invalid("invalid_filter", "the trace request is invalid", exc) from None
            reply = await ask(gw, r.AUDIT_TRACE, ask_body, r.AuditTraceReply, "audit", AUDIT_TIMEOUT_S)
            if reply.code != "ok":
                raise _audit_problem(reply.code, reply.error, "a trace")
            return json_response(reply.model_dump(mode="json", exclude={"code", "error"}))

        return await _read(gw, request, "audit.read", work)


def add_routes(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    """Add the operator (approvals, takeover, kill switches, budgets) and analyst (audit) routes."""
    _approval_routes(app, gw, problems)
    _takeover_route(app, gw, problems)
    _halt_routes(app, gw, problems)
    _budget_routes(app, gw, problems)
    _audit_routes(app, gw, problems)


__all__ = [
    "HaltRequest",
    "TakeoverRequest",
    "VoteRequest",
    "acting_user",
    "add_routes",
    "assigned_task",
    "list_halts",
    "to_csv",
    "vote_outcome",
]
