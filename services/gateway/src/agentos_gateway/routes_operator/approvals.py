"""Approvals and votes, through the policy service's ``agentosrpc.policy.approval|approvals|vote``."""

from __future__ import annotations

from typing import Literal

from agentos_schemas import rpc as r
from fastapi import FastAPI
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
    read,
    service_failed,
    tenant_of,
    write,
)

NO_POLICY = "no policy loaded"
Verdict = Literal["approve", "reject"]


class VoteRequest(BaseModel):
    """The body of ``POST /approvals/{id}/approve`` and ``…/reject``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    user: str | None = Field(default=None, pattern=HUMAN)
    """The human voting, as named in the policy's ``humans`` (default: the key's name; only an
    admin key may name someone else)."""
    reason: str = Field(default="", max_length=2000)
    """Why (kept in the log); required to reject."""


async def approval(gw: Gateway, who: Principal, approval_id: str) -> r.ApprovalInfo:
    """One approval as the policy service knows it; 404 if unknown or another tenant's."""
    query = r.ApprovalQuery(approval_id=approval_id)
    reply = await ask(gw, r.POLICY_APPROVAL, query, r.ApprovalReply, "policy", POLICY_TIMEOUT_S)
    info = reply.approval
    if info is None or (who.tenant is not None and info.tenant != who.tenant):
        if reply.error and not reply.error.startswith("no approval"):
            raise service_failed(reply.error)
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
        return json_response({"approval": info.model_dump(mode="json"), "state": _state(info), "voted_by": user})
    error = reply.error or "no answer"
    if info is None:
        if error.startswith("no approval"):
            raise Problem(404, "unknown_approval", error, dlq=False)
        raise service_failed(error)
    if info.status != "pending":
        raise Problem(409, "approval_decided", error, dlq=False)
    if user in info.approved_by or info.rejected_by == user:
        raise Problem(409, "duplicate_vote", error, dlq=False)
    if error == NO_POLICY:
        raise Problem(
            503, "no_policy", "the policy service has no policy loaded", dlq=False, headers={"Retry-After": "2"}
        )
    raise Problem(403, "not_an_approver", error, dlq=False)


async def vote(
    gw: Gateway, request: Request, raw: bytes, who: Principal, approval_id: str, verdict: Verdict
) -> Response:
    """Cast ``who``'s (or the named human's) vote through the policy service."""
    ballot = parse_body(VoteRequest, raw, request.headers.get("content-type"))
    if verdict == "reject" and not ballot.reason.strip():
        raise Problem(422, "reason_required", "a rejection needs a reason (it is kept in the log)", dlq=False)
    user = acting_user(who, ballot.user)
    if who.tenant is not None:
        await approval(gw, who, approval_id)
    cast = r.ApprovalVote(approval_id=approval_id, user=user, verdict=verdict, reason=ballot.reason)
    reply = await ask(gw, r.POLICY_VOTE, cast, r.ApprovalReply, "policy", POLICY_TIMEOUT_S)
    return vote_outcome(reply, approval_id, user)


def add_approval_routes(app: FastAPI, gw: Gateway, problems: Problems) -> None:
    """``GET /approvals``, ``GET /approvals/{id}`` and the two vote routes."""

    @app.get("/approvals", responses=problems, summary="Approvals waiting for a human", tags=["operator"])
    async def list_approvals(
        request: Request, tenant: str | None = None, status: r.ApprovalStatusName = "pending"
    ) -> Response:
        """Approvals in ``status`` (default pending), every tenant unless ``tenant`` is given (a
        tenant-bound key sees its own). What `agentos approvals` lists."""

        async def work(who: Principal) -> Response:
            query = r.ApprovalList(tenant=tenant_of(who, tenant), status=status)
            reply = await ask(gw, r.POLICY_APPROVALS, query, r.ApprovalListReply, "policy", POLICY_TIMEOUT_S)
            if reply.error:
                raise service_failed(reply.error)
            return json_response(
                {"approvals": [a.model_dump(mode="json") for a in reply.approvals], "count": len(reply.approvals)}
            )

        return await read(gw, request, "approvals.read", work)

    @app.get(
        "/approvals/{approval_id}", responses=problems, summary="One approval and where it stands", tags=["operator"]
    )
    async def get_approval(approval_id: str, request: Request) -> Response:
        """Its risk, votes so far, who may approve, deadline and status; 404 if unknown."""

        async def work(who: Principal) -> Response:
            info = await approval(gw, who, approval_id)
            return json_response({"approval": info.model_dump(mode="json"), "state": _state(info)})

        return await read(gw, request, "approvals.read", work)

    _vote_route(app, gw, problems, "approve")
    _vote_route(app, gw, problems, "reject")


def _vote_route(app: FastAPI, gw: Gateway, problems: Problems, verdict: Verdict) -> None:
    async def post_vote(approval_id: str, request: Request) -> Response:
        return await write(
            gw, request, "approvals.vote", lambda raw, who: vote(gw, request, raw, who, approval_id, verdict)
        )

    post_vote.__doc__ = (
        f"The human (``user``, default the key's name) {verdict}s; the policy checks they hold a role "
        "allowed for the risk tier and counts each person once. 200 with the approval's state; 403 "
        "`not_an_approver` / `wrong_user`, 404 `unknown_approval`, 409 `duplicate_vote` / `approval_decided`."
    )
    summary = (
        "Approve a pending request (high risk: two different people)"
        if verdict == "approve"
        else "Reject a pending request (the agent is told it was denied)"
    )
    body = json_body(VoteRequest)
    body["requestBody"]["required"] = verdict == "reject"
    app.post(
        f"/approvals/{{approval_id}}/{verdict}",
        responses=problems,
        summary=summary,
        openapi_extra=body,
        tags=["operator"],
        name=f"{verdict}_approval",
    )(post_vote)
