"""The budget ledger in Postgres schema ``policy``: caps per agent, team and tenant, per day and month.

A model call first **reserves** its estimate (prompt tokens × price + max output tokens × price)
against every cap that applies, in one transaction that locks those counters in a fixed order
(``SELECT … FOR UPDATE``): a reservation that would take any counter past its cap is refused, so
concurrent calls racing for the last of a budget can never reserve more than the cap. After the
call the specialist reports the real cost and the reservation is **settled** (estimate out, real
cost in). Only a call that costs more than its estimate can go over, by at most that difference.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from agentos_kernel.db import first_time
from agentos_policy.model import Policy, matches
from agentos_schemas.rpc import BudgetLine

SCHEMA = "policy"
S = SCHEMA
SETTLE_CONSUMER = "policy-settle"

#: (scope, name, period, period_key)
Key = tuple[str, str, str, str]


@dataclass(frozen=True)
class Cap:
    """One counter's cap for a call: its key and the USD and token limits (None: no limit)."""

    key: Key
    usd: float | None
    tokens: int | None


@dataclass(frozen=True)
class Refused:
    """Why a reservation was refused."""

    reason: str


@dataclass(frozen=True)
class Settlement:
    """A settled reservation's estimate, for the ``budget.settled`` fact."""

    reservation_id: str
    estimated_usd: float
    estimated_tokens: int
    agent: str
    goal_id: str


def period_keys(now: dt.datetime) -> dict[str, str]:
    """The current day and month keys (UTC) of the counters."""
    return {"day": now.strftime("%Y-%m-%d"), "month": now.strftime("%Y-%m")}


def caps_for(policy: Policy, tenant: str, agent: str, team: str, now: dt.datetime) -> list[Cap]:
    """Every cap that applies to a call by ``agent`` (of ``team``) for ``tenant``, tightest per key."""
    names = {"agent": agent, "team": team, "tenant": tenant}
    keys = period_keys(now)
    found: dict[Key, Cap] = {}
    for cap in policy.budgets:
        name = names[cap.scope]
        if not (matches(cap.tenant, tenant) and matches(cap.name, name)):
            continue
        key = (cap.scope, name, cap.period, keys[cap.period])
        old = found.get(key)
        usd = _tighter(old.usd if old else None, cap.usd)
        tokens = _tighter(old.tokens if old else None, cap.tokens)
        found[key] = Cap(key, usd, tokens)
    return [found[k] for k in sorted(found)]


def _tighter(a: float | int | None, b: float | int | None) -> float | int | None:  # type: ignore[return]
    if a is None:
        return b
    return a if b is None else min(a, b)


def _dec(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


async def reserve(pool: asyncpg.Pool, tenant: str, caps: list[Cap], reservation_id: str, usd: float,
                  tokens: int, meta: dict[str, str]) -> Refused | None:
    """Hold ``usd`` and ``tokens`` against every cap, or refuse naming the cap that would be passed."""
    amount, keys = Decimal(str(usd)), [list(c.key) for c in caps]
    async with pool.acquire() as conn, conn.transaction():
        await _ensure_counters(conn, tenant, caps)
        rows = await conn.fetch(
            f"SELECT scope, name, period, period_key, used_usd + reserved_usd AS usd, "
            f"used_tokens + reserved_tokens AS tokens FROM {S}.budget_counters "
            "WHERE tenant = $1 AND (scope, name, period, period_key) IN "
            "(SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])) "
            "ORDER BY scope, name, period, period_key FOR UPDATE",
            tenant, *_columns(caps))
        have = {(r["scope"], r["name"], r["period"], r["period_key"]): r for r in rows}
        for cap in caps:
            row = have[cap.key]
            if cap.usd is not None and row["usd"] + amount > _dec(cap.usd):
                return Refused(f"budget: {cap.key[0]} {cap.key[1]!r} has ${float(row['usd']):.4f} of "
                               f"${cap.usd:.4f} per {cap.key[2]} used or reserved; this call needs ${usd:.4f}")
            if cap.tokens is not None and row["tokens"] + tokens > cap.tokens:
                return Refused(f"budget: {cap.key[0]} {cap.key[1]!r} has {row['tokens']} of {cap.tokens} "
                               f"tokens per {cap.key[2]} used or reserved; this call needs {tokens}")
        await conn.execute(
            f"UPDATE {S}.budget_counters c SET reserved_usd = reserved_usd + $6, "
            "reserved_tokens = reserved_tokens + $7, cap_usd = u.cu, cap_tokens = u.ct, updated_at = now() "
            "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $8::numeric[], $9::bigint[]) "
            "AS u(s, n, p, k, cu, ct) "
            "WHERE c.tenant = $1 AND (c.scope, c.name, c.period, c.period_key) = (u.s, u.n, u.p, u.k)",
            tenant, *_columns(caps), amount, tokens, [_dec(c.usd) for c in caps], [c.tokens for c in caps])
        await conn.execute(
            f"INSERT INTO {S}.budget_reservations (id, tenant, agent, team, goal_id, task_id, model, counters, "
            "est_usd, est_tokens, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'reserved')",
            reservation_id, tenant, meta.get("agent", ""), meta.get("team", ""), meta.get("goal_id", ""),
            meta.get("task_id", ""), meta.get("model", ""), json.dumps(keys), amount, tokens)
    return None


def _columns(caps: list[Cap]) -> list[list[str]]:
    return [[c.key[i] for c in caps] for i in range(4)]


async def _ensure_counters(conn: asyncpg.Connection, tenant: str, caps: list[Cap]) -> None:
    await conn.execute(
        f"INSERT INTO {S}.budget_counters (tenant, scope, name, period, period_key) "
        "SELECT $1, s, n, p, k FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(s, n, p, k) "
        "ORDER BY s, n, p, k ON CONFLICT DO NOTHING", tenant, *_columns(caps))


async def settle(pool: asyncpg.Pool, event_id: str, reservation_id: str, usd: float,
                 tokens: int) -> Settlement | None:
    """Replace a reservation's estimate with the real cost, once (None if unknown or already settled)."""
    async with pool.acquire() as conn, conn.transaction():
        if not await first_time(conn, S, SETTLE_CONSUMER, event_id):
            return None
        row = await conn.fetchrow(
            f"SELECT * FROM {S}.budget_reservations WHERE id = $1 AND status = 'reserved' FOR UPDATE",
            reservation_id)
        if row is None:
            return None
        await _release(conn, row, Decimal(str(usd)), tokens, "settled")
    return Settlement(reservation_id, float(row["est_usd"]), int(row["est_tokens"]), row["agent"],
                      row["goal_id"])


async def _release(conn: asyncpg.Connection, row: asyncpg.Record, usd: Decimal, tokens: int,
                   status: str) -> None:
    keys = json.loads(row["counters"])
    cols = [[k[i] for k in keys] for i in range(4)]
    await conn.fetch(
        f"SELECT 1 FROM {S}.budget_counters WHERE tenant = $1 AND (scope, name, period, period_key) IN "
        "(SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])) "
        "ORDER BY scope, name, period, period_key FOR UPDATE", row["tenant"], *cols)
    await conn.execute(
        f"UPDATE {S}.budget_counters c SET reserved_usd = greatest(reserved_usd - $6, 0), "
        "reserved_tokens = greatest(reserved_tokens - $7, 0), used_usd = used_usd + $8, "
        "used_tokens = used_tokens + $9, updated_at = now() "
        "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(s, n, p, k) "
        "WHERE c.tenant = $1 AND (c.scope, c.name, c.period, c.period_key) = (u.s, u.n, u.p, u.k)",
        row["tenant"], *cols, row["est_usd"], row["est_tokens"], usd, tokens)
    await conn.execute(
        f"UPDATE {S}.budget_reservations SET status = $2, cost_usd = $3, tokens = $4, settled_at = now() "
        "WHERE id = $1", row["id"], status, usd, tokens)


async def expire_reservations(pool: asyncpg.Pool, older_than_s: float) -> int:
    """Reservations never settled (the caller died) are charged at their estimate."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT * FROM {S}.budget_reservations WHERE status = 'reserved' "
            "AND created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT 100 "
            "FOR UPDATE SKIP LOCKED", older_than_s)
        for row in rows:
            await _release(conn, row, row["est_usd"], int(row["est_tokens"]), "expired")
    return len(rows)


async def report(pool: asyncpg.Pool, tenant: str | None, now: dt.datetime) -> list[BudgetLine]:
    """Spend against caps in the current day and month."""
    keys = list(period_keys(now).values())
    rows = await pool.fetch(
        f"SELECT * FROM {S}.budget_counters WHERE ($1::text IS NULL OR tenant = $1) "
        "AND period_key = ANY($2::text[]) ORDER BY tenant, scope, name, period", tenant, keys)
    return [BudgetLine(
        tenant=r["tenant"], scope=r["scope"], name=r["name"], period=r["period"], period_key=r["period_key"],
        used_usd=float(r["used_usd"]), reserved_usd=float(r["reserved_usd"]),
        cap_usd=None if r["cap_usd"] is None else float(r["cap_usd"]), used_tokens=int(r["used_tokens"]),
        reserved_tokens=int(r["reserved_tokens"]), cap_tokens=r["cap_tokens"]) for r in rows]
