"""Humans in the loop: votes on approvals (with the policy's roles and the two-person rule),
deadlines that escalate or expire, and takeovers that cancel what a task was waiting for."""

from __future__ import annotations

import time

from agentos_schemas import derived_event_id
from agentos_schemas.events.policy import ApprovalDecided, ApprovalVoted
from agentos_schemas.rpc import ApprovalInfo, ApprovalReply, ApprovalVote, PolicyRequest

from agentos_policy import store
from agentos_policy.decider import Decider


def may_vote(decider: Decider, info: ApprovalInfo, user: str) -> str | None:
    """Why ``user`` may not vote on ``info`` (None if they may)."""
    policy = decider.policy
    if policy is None:
        return "no policy loaded"
    human = policy.humans.get(user)
    if human is None:
        return f"user {user!r} is not in policy {policy.version}"
    if info.escalated:
        if info.approver_role not in human.roles:
            return f"the approval was escalated to role {info.approver_role!r}, which {user} does not hold"
        return None
    for role in human.roles:
        spec = policy.human_roles.get(role)
        if role == info.approver_role or (spec is not None and info.risk in spec.approves):
            return None
    return f"no role of {user!r} ({', '.join(human.roles) or 'none'}) may approve {info.risk} risk"


def _request_of(info: ApprovalInfo) -> PolicyRequest:
    return PolicyRequest(
        tenant=info.tenant,
        principal="service:policy",
        action="outside_action",
        resource=info.resource,
        agent=info.agent,
        goal_id=info.goal_id,
        task_id=info.task_id,
    )


async def vote(decider: Decider, request: ApprovalVote) -> ApprovalReply:
    """Record a human's vote and publish ``approval.voted`` (and ``approval.decided`` when it decides)."""
    info = await store.get(decider.pool, request.approval_id)
    if info is None:
        return ApprovalReply(error=f"no approval {request.approval_id!r}")
    refusal = may_vote(decider, info, request.user)
    if refusal is not None:
        return ApprovalReply(approval=info, error=refusal)
    outcome = await store.vote(decider.pool, request.approval_id, request.user, request.verdict, request.reason)
    if not outcome.counted or outcome.info is None:
        return ApprovalReply(approval=outcome.info, error=outcome.message)
    done = outcome.info
    about = _request_of(done)
    await decider.emit(
        ApprovalVoted(
            approval_id=done.approval_id,
            user=request.user,
            verdict=request.verdict,
            reason=request.reason,
            approvals=len(done.approved_by),
            needed=done.needed,
        ),
        about,
        derived_event_id(done.approval_id, "vote", request.user),
    )
    if outcome.decided:
        await announce(decider, done)
    return ApprovalReply(approval=done)


async def announce(decider: Decider, info: ApprovalInfo) -> None:
    """Publish ``approval.decided`` for an approval that reached a final state."""
    if info.status == "pending":
        return
    decided_by = info.approved_by if info.status == "approved" else ((info.rejected_by,) if info.rejected_by else ())
    await decider.emit(
        ApprovalDecided(
            approval_id=info.approval_id,
            status=info.status,
            decided_by=decided_by,
            reason=info.reason,
            goal_id=info.goal_id,
            task_id=info.task_id,
        ),
        _request_of(info),
        derived_event_id(info.approval_id, "decided"),
    )


async def expire_due(decider: Decider) -> int:
    """Escalate or expire approvals past their deadline; returns how many changed."""
    changed = await store.due(decider.pool)
    for info, action in changed:
        request = _request_of(info)
        if action == "escalated":
            await decider.escalate(
                request,
                f"approval {info.approval_id} ({info.risk} risk, {info.summary}) "
                f"was not decided in time; escalated to {info.approver_role}",
                info.approver_role,
            )
        else:
            await announce(decider, info)
        await decider.alert(
            request, "approval_timeout", f"approval {info.approval_id} {action} after its deadline", time.time()
        )
    return len(changed)


async def taken_over(decider: Decider, tenant: str, task_id: str, user: str) -> int:
    """A human answered the task: the approvals it waited for are rejected as moot."""
    cancelled = await store.cancel_for_task(decider.pool, tenant, task_id, f"task taken over by {user}")
    for info in cancelled:
        await announce(decider, info)
    return len(cancelled)
