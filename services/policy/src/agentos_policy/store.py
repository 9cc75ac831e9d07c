"""The policy service's Postgres schema ``policy``: migrations and the approval state machine.

An approval is keyed by the call that asked for it (tenant + call id), so the same call asked
again — a retried task, a resumed conversation — finds the same approval. Votes are one row per
person: the same person approving twice counts once (two-person rule). Pending approvals past
their deadline escalate (once, to the tier's escalation role) or expire.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
from agentos_kernel.db import migrate
from agentos_kernel.guard import text as redacted
from agentos_schemas.rpc import ApprovalInfo, PolicyRequest

from agentos_policy.ledger import SCHEMA
from agentos_policy.model import RiskTier

S = SCHEMA

MIGRATIONS = [
    """
    CREATE TABLE {schema}.budget_counters (
        tenant text NOT NULL, scope text NOT NULL, name text NOT NULL, period text NOT NULL,
        period_key text NOT NULL,
        cap_usd numeric, cap_tokens bigint,
        used_usd numeric NOT NULL DEFAULT 0, reserved_usd numeric NOT NULL DEFAULT 0,
        used_tokens bigint NOT NULL DEFAULT 0, reserved_tokens bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, scope, name, period, period_key)
    );
    CREATE TABLE {schema}.budget_reservations (
        id text PRIMARY KEY, tenant text NOT NULL, agent text NOT NULL, team text NOT NULL,
        goal_id text NOT NULL, task_id text NOT NULL, model text NOT NULL, counters jsonb NOT NULL,
        est_usd numeric NOT NULL, est_tokens bigint NOT NULL, cost_usd numeric, tokens bigint,
        status text NOT NULL CHECK (status IN ('reserved', 'settled', 'expired')),
        created_at timestamptz NOT NULL DEFAULT now(), settled_at timestamptz
    );
    CREATE INDEX budget_reservations_open ON {schema}.budget_reservations (status, created_at);
    CREATE TABLE {schema}.budget_caps (
        policy_version text NOT NULL, tenant text NOT NULL, scope text NOT NULL, name text NOT NULL,
        period text NOT NULL, usd numeric, tokens bigint
    );
    CREATE TABLE {schema}.approvals (
        id text PRIMARY KEY, tenant text NOT NULL, call_key text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
        risk text NOT NULL, needed int NOT NULL, approver_role text NOT NULL, on_timeout text NOT NULL,
        escalate_to text NOT NULL, escalation_timeout_s double precision NOT NULL,
        escalated boolean NOT NULL DEFAULT false, decision_id text NOT NULL, request jsonb NOT NULL,
        reason text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL, decided_at timestamptz,
        UNIQUE (tenant, call_key)
    );
    CREATE INDEX approvals_due ON {schema}.approvals (status, expires_at);
    CREATE TABLE {schema}.approval_votes (
        approval_id text NOT NULL REFERENCES {schema}.approvals (id), voter text NOT NULL,
        verdict text NOT NULL CHECK (verdict IN ('approve', 'reject')), reason text NOT NULL DEFAULT '',
        voted_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (approval_id, voter)
    );
    """,
    # The ledger's reservation and settlement, each one statement (one round trip) instead of a
    # transaction of five or six: see agentos_policy.ledger for what they guarantee.
    """
    CREATE OR REPLACE FUNCTION {schema}.reserve(
        p_tenant text, p_scopes text[], p_names text[], p_periods text[], p_keys text[], p_cap_usd numeric[],
        p_cap_tokens bigint[], p_usd numeric, p_tokens bigint, p_id text, p_agent text, p_team text,
        p_goal_id text, p_task_id text, p_model text, p_counters jsonb)
    RETURNS TABLE (refused_at int, refused_on text, have_usd numeric, have_tokens bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        v_usd numeric;
        v_tokens bigint;
    BEGIN
        INSERT INTO {schema}.budget_counters (tenant, scope, name, period, period_key)
            SELECT p_tenant, s, n, p, k FROM unnest(p_scopes, p_names, p_periods, p_keys) AS u(s, n, p, k)
            ORDER BY s, n, p, k ON CONFLICT DO NOTHING;
        PERFORM 1 FROM {schema}.budget_counters
            WHERE tenant = p_tenant AND (scope, name, period, period_key) IN
                (SELECT * FROM unnest(p_scopes, p_names, p_periods, p_keys))
            ORDER BY scope, name, period, period_key FOR UPDATE;
        FOR i IN 1 .. coalesce(array_length(p_scopes, 1), 0) LOOP
            SELECT used_usd + reserved_usd, used_tokens + reserved_tokens INTO v_usd, v_tokens
                FROM {schema}.budget_counters
                WHERE tenant = p_tenant AND scope = p_scopes[i] AND name = p_names[i]
                    AND period = p_periods[i] AND period_key = p_keys[i];
            IF p_cap_usd[i] IS NOT NULL AND v_usd + p_usd > p_cap_usd[i] THEN
                RETURN QUERY SELECT i, 'usd'::text, v_usd, v_tokens;
                RETURN;
            END IF;
            IF p_cap_tokens[i] IS NOT NULL AND v_tokens + p_tokens > p_cap_tokens[i] THEN
                RETURN QUERY SELECT i, 'tokens'::text, v_usd, v_tokens;
                RETURN;
            END IF;
        END LOOP;
        UPDATE {schema}.budget_counters c SET reserved_usd = reserved_usd + p_usd,
                reserved_tokens = reserved_tokens + p_tokens, cap_usd = u.cu, cap_tokens = u.ct,
                updated_at = now()
            FROM unnest(p_scopes, p_names, p_periods, p_keys, p_cap_usd, p_cap_tokens)
                AS u(s, n, p, k, cu, ct)
            WHERE c.tenant = p_tenant AND (c.scope, c.name, c.period, c.period_key) = (u.s, u.n, u.p, u.k);
        INSERT INTO {schema}.budget_reservations (id, tenant, agent, team, goal_id, task_id, model,
                counters, est_usd, est_tokens, status)
            VALUES (p_id, p_tenant, p_agent, p_team, p_goal_id, p_task_id, p_model, p_counters, p_usd,
                p_tokens, 'reserved');
    END $$;

    CREATE OR REPLACE FUNCTION {schema}.release(p_id text, p_usd numeric, p_tokens bigint, p_status text)
    RETURNS TABLE (r_est_usd numeric, r_est_tokens bigint, r_agent text, r_goal_id text)
    LANGUAGE plpgsql AS $$
    DECLARE
        r {schema}.budget_reservations;
    BEGIN
        SELECT * INTO r FROM {schema}.budget_reservations WHERE id = p_id AND status = 'reserved' FOR UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        PERFORM 1 FROM {schema}.budget_counters
            WHERE tenant = r.tenant AND (scope, name, period, period_key) IN
                (SELECT k ->> 0, k ->> 1, k ->> 2, k ->> 3 FROM jsonb_array_elements(r.counters) AS k)
            ORDER BY scope, name, period, period_key FOR UPDATE;
        UPDATE {schema}.budget_counters c SET reserved_usd = greatest(reserved_usd - r.est_usd, 0),
                reserved_tokens = greatest(reserved_tokens - r.est_tokens, 0), used_usd = used_usd + p_usd,
                used_tokens = used_tokens + p_tokens, updated_at = now()
            FROM (SELECT k ->> 0 AS s, k ->> 1 AS n, k ->> 2 AS p, k ->> 3 AS pk
                  FROM jsonb_array_elements(r.counters) AS k) AS u
            WHERE c.tenant = r.tenant AND (c.scope, c.name, c.period, c.period_key) = (u.s, u.n, u.p, u.pk);
        UPDATE {schema}.budget_reservations SET status = p_status, cost_usd = p_usd, tokens = p_tokens,
                settled_at = now()
            WHERE id = p_id;
        RETURN QUERY SELECT r.est_usd, r.est_tokens, r.agent, r.goal_id;
    END $$;

    CREATE OR REPLACE FUNCTION {schema}.settle(p_consumer text, p_event_id text, p_id text, p_usd numeric,
                                               p_tokens bigint)
    RETURNS TABLE (r_est_usd numeric, r_est_tokens bigint, r_agent text, r_goal_id text)
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {schema}.processed_events (consumer, event_id) VALUES (p_consumer, p_event_id)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        RETURN QUERY SELECT * FROM {schema}.release(p_id, p_usd, p_tokens, 'settled');
    END $$;
    """,
    # A settlement carried on task.completed: only for a reservation made for that tenant, task and
    # agent (task.completed is also what a human's takeover publishes).
    """
    CREATE OR REPLACE FUNCTION {schema}.settle_task(p_consumer text, p_event_id text, p_id text,
                                                    p_usd numeric, p_tokens bigint, p_tenant text,
                                                    p_task_id text, p_agent text)
    RETURNS TABLE (r_est_usd numeric, r_est_tokens bigint, r_agent text, r_goal_id text)
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1 FROM {schema}.budget_reservations
            WHERE id = p_id AND tenant = p_tenant AND task_id = p_task_id AND agent = p_agent;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        RETURN QUERY SELECT * FROM {schema}.settle(p_consumer, p_event_id, p_id, p_usd, p_tokens);
    END $$;
    """,
    # A model call's reservation is keyed by the call: the same call asked again finds the open
    # reservation it holds (no second hold); a call whose reservation ended already is a new run,
    # held under p_new_id. Two asks of one call at once: the second waits on the counters' locks,
    # then finds the first one's reservation (unique_violation, caught below).
    """
    CREATE OR REPLACE FUNCTION {schema}.reserve_call(
        p_tenant text, p_scopes text[], p_names text[], p_periods text[], p_keys text[], p_cap_usd numeric[],
        p_cap_tokens bigint[], p_usd numeric, p_tokens bigint, p_id text, p_new_id text, p_agent text,
        p_team text, p_goal_id text, p_task_id text, p_model text, p_counters jsonb)
    RETURNS TABLE (held text, refused_at int, refused_on text, have_usd numeric, have_tokens bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        v_status text;
        v_id text := p_id;
        r record;
    BEGIN
        SELECT status INTO v_status FROM {schema}.budget_reservations WHERE id = p_id;
        IF v_status = 'reserved' THEN
            RETURN QUERY SELECT p_id, NULL::int, NULL::text, NULL::numeric, NULL::bigint;
            RETURN;
        ELSIF v_status IS NOT NULL THEN
            v_id := p_new_id;
        END IF;
        BEGIN
            SELECT * INTO r FROM {schema}.reserve(p_tenant, p_scopes, p_names, p_periods, p_keys, p_cap_usd,
                p_cap_tokens, p_usd, p_tokens, v_id, p_agent, p_team, p_goal_id, p_task_id, p_model, p_counters);
            IF FOUND THEN
                RETURN QUERY SELECT NULL::text, r.refused_at, r.refused_on, r.have_usd, r.have_tokens;
                RETURN;
            END IF;
        EXCEPTION WHEN unique_violation THEN
            RETURN QUERY SELECT v_id, NULL::int, NULL::text, NULL::numeric, NULL::bigint;
            RETURN;
        END;
        RETURN QUERY SELECT v_id, NULL::int, NULL::text, NULL::numeric, NULL::bigint;
    END $$;
    """,
]


async def migrate_schema(pool: asyncpg.Pool) -> None:
    """Create or upgrade the ``policy`` schema (safe on every start, by every replica)."""
    await migrate(pool, SCHEMA, MIGRATIONS)


async def record_caps(pool: asyncpg.Pool, version: str, caps: list[dict[str, Any]]) -> None:
    """Keep the caps of the loaded policy version next to the ledger (what `agentos budget` shows).
    Replicas starting together each record them: one at a time, or both would insert the rows."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"agentos-policy-caps-{version}")
        await conn.execute(f"DELETE FROM {S}.budget_caps WHERE policy_version = $1", version)
        await conn.executemany(
            f"INSERT INTO {S}.budget_caps VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [(version, c["tenant"], c["scope"], c["name"], c["period"], c["usd"], c["tokens"]) for c in caps],
        )


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


async def _votes(conn: asyncpg.Connection, approval_id: str) -> list[asyncpg.Record]:
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
