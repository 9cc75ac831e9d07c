"""The approval state machine, in the policy service's Postgres schema ``policy``
(its tables are created by :mod:`agentos_policy.schema`).

An approval is keyed by the call that asked for it (tenant + call id), so the same call asked
again — a retried task, a resumed conversation — finds the same approval. Votes are one row per
person: the same person approving twice counts once (two-person rule). Pending approvals past
their deadline escalate (once, to the tier's escalation role) or expire.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import asyncpg
from agentos_kernel.db import Connection
from agentos_kernel.guard import text as redacted
from agentos_schemas.rpc import ApprovalInfo, PolicyRequest

from agentos_policy.ledger import SCHEMA
from agentos_policy.model import RiskTier

S = SCHEMA


@dataclass(frozen=True)
class VoteOutcome:
    """What a vote did: counted or not, decided or not, and why."""

    info: ApprovalInfo | None
    counted: bool
    decided: bool
    message: str


def _info(row: asyncpg.Record, votes: list[asyncpg.Record]) -> ApprovalInfo:
    request = PolicyRequest.model_validate_json(row["request"])
    rejected = next((v["voter"] for v in votes if v["verdict"] == "reject"), None)
    summary = f"{request.action} {request.tool or request.resource} {json.dumps(request.args)[:160]}"
    return ApprovalInfo(
        approval_id=row["id"],
        tenant=row["tenant"],
        status=row["status"],
        risk=row["risk"],
        needed=row["needed"],
        approver_role=row["approver_role"],
        approved_by=tuple(v["voter"] for v in votes if v["verdict"] == "approve"),
        rejected_by=rejected,
        reason=row["reason"],
        escalated=row["escalated"],
        agent=request.agent,
        goal_id=request.goal_id,
        task_id=request.task_id,
        action=request.action,
        resource=request.resource,
        summary=summary,
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


async def _votes(conn: Connection, approval_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT voter, verdict FROM {S}.approval_votes WHERE approval_id = $1 ORDER BY voted_at", approval_id
    )


async def open_approval(
    pool: asyncpg.Pool,
    approval_id: str,
    call_key: str,
    request: PolicyRequest,
    risk: str,
    tier: RiskTier,
    decision_id: str,
    now: dt.datetime,
) -> tuple[ApprovalInfo, bool]:
    """The approval for this call: the existing one, or a new pending one (second value True)."""
    expires = now + dt.timedelta(seconds=tier.timeout_s)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"INSERT INTO {S}.approvals (id, tenant, call_key, status, risk, needed, approver_role, on_timeout, "
            "escalate_to, escalation_timeout_s, decision_id, request, expires_at) "
            "VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12) "
            "ON CONFLICT (tenant, call_key) DO NOTHING RETURNING *",
            approval_id,
            request.tenant,
            call_key,
            risk,
            max(tier.approvals, 1),
            tier.approver_role,
            tier.on_timeout,
            tier.escalate_to,
            tier.escalation_timeout_s,
            decision_id,
            request.model_dump_json(),
            expires,
        )
        created = row is not None
        if row is None:
            row = await conn.fetchrow(
                f"SELECT * FROM {S}.approvals WHERE tenant = $1 AND call_key = $2", request.tenant, call_key
            )
            assert row is not None  # the INSERT met this row, and approvals are never deleted
        return _info(row, await _votes(conn, row["id"])), created


async def get(pool: asyncpg.Pool, approval_id: str) -> ApprovalInfo | None:
    """One approval by id."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT * FROM {S}.approvals WHERE id = $1", approval_id)
        return None if row is None else _info(row, await _votes(conn, approval_id))


async def listing(pool: asyncpg.Pool, tenant: str | None, status: str) -> list[ApprovalInfo]:
    """Approvals in ``status`` (of one tenant, or all), oldest first."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT * FROM {S}.approvals WHERE status = $1 AND ($2::text IS NULL OR tenant = $2) "
            "ORDER BY created_at LIMIT 500",
            status,
            tenant,
        )
        return [_info(r, await _votes(conn, r["id"])) for r in rows]


async def vote(pool: asyncpg.Pool, approval_id: str, user: str, verdict: str, reason: str) -> VoteOutcome:
    """Record one person's vote; decides the approval when it is a rejection or the last approval needed."""
    reason = redacted(reason) or ""  # free text an approver typed: stored redacted, like the JSON
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"SELECT * FROM {S}.approvals WHERE id = $1 FOR UPDATE", approval_id)
        if row is None:
            return VoteOutcome(None, False, False, f"no approval {approval_id!r}")
        if row["status"] != "pending":
            return VoteOutcome(
                _info(row, await _votes(conn, approval_id)), False, False, f"approval is already {row['status']}"
            )
        added = await conn.fetchval(
            f"INSERT INTO {S}.approval_votes (approval_id, voter, verdict, reason) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            approval_id,
            user,
            verdict,
            reason,
        )
        votes = await _votes(conn, approval_id)
        if not added:
            return VoteOutcome(
                _info(row, votes),
                False,
                False,
                f"{user} already voted on this approval; the same person does not count twice",
            )
        approvals = sum(1 for v in votes if v["verdict"] == "approve")
        status = "rejected" if verdict == "reject" else "approved" if approvals >= row["needed"] else None
        if status is not None:
            row = await conn.fetchrow(
                f"UPDATE {S}.approvals SET status = $2, reason = $3, decided_at = now() WHERE id = $1 RETURNING *",
                approval_id,
                status,
                reason,
            )
            assert row is not None  # locked FOR UPDATE above: the UPDATE finds it
        message = status or f"approval {approvals} of {row['needed']} recorded"
        return VoteOutcome(_info(row, votes), True, status is not None, message)


async def due(pool: asyncpg.Pool) -> list[tuple[ApprovalInfo, str]]:
    """Pending approvals past their deadline: escalated once if their tier says so, else expired."""
    out: list[tuple[ApprovalInfo, str]] = []
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT * FROM {S}.approvals WHERE status = 'pending' AND expires_at < now() "
            "ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED"
        )
        for row in rows:
            if row["on_timeout"] == "escalate" and not row["escalated"]:
                new = await conn.fetchrow(
                    f"UPDATE {S}.approvals SET escalated = true, approver_role = escalate_to, "
                    "expires_at = now() + make_interval(secs => escalation_timeout_s) WHERE id = $1 RETURNING *",
                    row["id"],
                )
                action = "escalated"
            else:
                new = await conn.fetchrow(
                    f"UPDATE {S}.approvals SET status = 'expired', reason = 'no decision before the deadline', "
                    "decided_at = now() WHERE id = $1 RETURNING *",
                    row["id"],
                )
                action = "expired"
            assert new is not None  # locked FOR UPDATE above: the UPDATE finds it
            out.append((_info(new, await _votes(conn, row["id"])), action))
    return out


async def cancel_for_task(pool: asyncpg.Pool, tenant: str, task_id: str, reason: str) -> list[ApprovalInfo]:
    """Reject the task's pending approvals (a human took the task over)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"UPDATE {S}.approvals SET status = 'rejected', reason = $3, decided_at = now() "
            "WHERE tenant = $1 AND status = 'pending' AND request->>'task_id' = $2 RETURNING *",
            tenant,
            task_id,
            redacted(reason),
        )
        return [_info(r, []) for r in rows]
