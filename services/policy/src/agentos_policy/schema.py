"""The policy service's Postgres schema ``policy``: its migrations, run on every start.

They create the ledger's tables and its PL/pgSQL functions (see :mod:`agentos_policy.ledger`) and
the approvals' tables (see :mod:`agentos_policy.store`).
"""

from __future__ import annotations

import asyncpg
from agentos_kernel.db import migrate

from agentos_policy.ledger import SCHEMA

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
