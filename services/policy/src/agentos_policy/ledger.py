"""The budget ledger in Postgres schema ``policy``: caps per agent, team and tenant, per day and month.

A model call first **reserves** its estimate (prompt tokens × price + max output tokens × price)
against every cap that applies, in one transaction that locks those counters in a fixed order
(``SELECT … FOR UPDATE``): a reservation that would take any counter past its cap is refused, so
concurrent calls racing for the last of a budget can never reserve more than the cap. After the
call the specialist reports the real cost and the reservation is **settled** (estimate out, real
cost in). Only a call that costs more than its estimate can go over, by at most that difference.
Each of the two is one statement, a PL/pgSQL function the schema's migrations create
(``policy.reserve``, ``policy.settle``), so each costs one round trip to Postgres.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
from agentos_schemas.money import usd as money
from agentos_schemas.rpc import BudgetLine

from agentos_policy.model import Policy, matches

SCHEMA = "policy"
S = SCHEMA
SETTLE_CONSUMER = "policy-settle"

#: (scope, name, period, period_key)
Key = tuple[str, str, str, str]
_Limit = TypeVar("_Limit", int, float)


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


def _tighter(a: _Limit | None, b: _Limit | None) -> _Limit | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _dec(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


async def reserve(
    pool: asyncpg.Pool,
    tenant: str,
    caps: list[Cap],
    reservation_id: str,
    usd: float,
    tokens: int,
    meta: dict[str, str],
    *,
    new_id: str | None = None,
) -> str | Refused:
    """Hold ``usd`` and ``tokens`` against every cap under ``reservation_id``, or refuse naming the
    cap that would be passed; returns the id of the reservation held.

    ``reservation_id`` names the call: when it already holds an open reservation (the same call
    asked again after a crash or a lost reply) that one is returned and nothing more is held. When
    it names one already settled or expired, this is a new run of the call with a cost of its own,
    held under ``new_id``. (A re-run that asked while an earlier run's settlement of the same call
    was still on its way would share that settlement; a task is re-run only after its ack wait,
    far later than a settlement takes.)

    One statement (``policy.reserve_call``, created by the schema's migrations), so one round trip:
    it creates the counters that do not exist yet, locks all of them in a fixed order, checks each
    cap in ``caps`` order and, if none would be passed, adds the estimate and records the reservation.
    """
    row = await pool.fetchrow(
        f"SELECT * FROM {S}.reserve_call($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        *_reserve_call_args(tenant, caps, reservation_id, new_id or reservation_id, usd, tokens, meta),
    )
    assert row is not None  # reserve_call answers one row: the reservation held, or the refusal
    if row["held"] is not None:
        return str(row["held"])
    return _refused(caps[row["refused_at"] - 1], row, usd, tokens)


def _reserve_call_args(
    tenant: str, caps: list[Cap], reservation_id: str, new_id: str, usd: float, tokens: int, meta: dict[str, str]
) -> list[Any]:
    """The arguments of ``policy.reserve_call``, in its parameter order: the caps as parallel arrays
    (the four key columns, the USD caps, the token caps), the estimate, the ids, what the call is."""
    return [
        tenant,
        *_columns(caps),
        [_dec(c.usd) for c in caps],
        [c.tokens for c in caps],
        Decimal(str(usd)),
        tokens,
        reservation_id,
        new_id,
        meta.get("agent", ""),
        meta.get("team", ""),
        meta.get("goal_id", ""),
        meta.get("task_id", ""),
        meta.get("model", ""),
        json.dumps([list(c.key) for c in caps]),
    ]


def _columns(caps: list[Cap]) -> list[list[str]]:
    return [[c.key[i] for c in caps] for i in range(4)]


def _refused(cap: Cap, row: asyncpg.Record, usd: float, tokens: int) -> Refused:
    """The refusal naming ``cap``, the one ``reserve_call`` found the estimate would pass, with what
    its counter holds (``row``) and what the call needs."""
    if row["refused_on"] == "usd":
        assert cap.usd is not None  # reserve_call refuses on USD only against a USD cap
        return Refused(
            f"budget: {cap.key[0]} {cap.key[1]!r} has {money(row['have_usd'])} of "
            f"{money(cap.usd)} per {cap.key[2]} used or reserved; this call needs {money(usd)}"
        )
    return Refused(
        f"budget: {cap.key[0]} {cap.key[1]!r} has {row['have_tokens']} of {cap.tokens} "
        f"tokens per {cap.key[2]} used or reserved; this call needs {tokens}"
    )


async def settle(pool: asyncpg.Pool, event_id: str, reservation_id: str, usd: float, tokens: int) -> Settlement | None:
    """Replace a reservation's estimate with the real cost, once (None if unknown or already settled).

    One statement (``policy.settle``): it records ``event_id`` as processed by ``policy-settle`` (the
    kernel's ``processed_events``, as :func:`agentos_kernel.db.first_time` would), locks the
    reservation and then its counters in the fixed order, moves the estimate out and the cost in.
    """
    row = await pool.fetchrow(
        f"SELECT * FROM {S}.settle($1, $2, $3, $4, $5)",
        SETTLE_CONSUMER,
        event_id,
        reservation_id,
        Decimal(str(usd)),
        tokens,
    )
    return _settlement(reservation_id, row)


async def settle_task(
    pool: asyncpg.Pool,
    event_id: str,
    reservation_id: str,
    usd: float,
    tokens: int,
    tenant: str,
    task_id: str,
    agent: str,
) -> Settlement | None:
    """:func:`settle` for a settlement carried on ``task.completed``: it settles only a reservation
    made for ``tenant``, ``task_id`` and ``agent`` (None otherwise, or if unknown or already settled).
    ``event_id`` names the settlement: :func:`task_settlement_id`."""
    row = await pool.fetchrow(
        f"SELECT * FROM {S}.settle_task($1, $2, $3, $4, $5, $6, $7, $8)",
        SETTLE_CONSUMER,
        event_id,
        reservation_id,
        Decimal(str(usd)),
        tokens,
        tenant,
        task_id,
        agent,
    )
    return _settlement(reservation_id, row)


def task_settlement_id(event_id: str, reservation_id: str) -> str:
    """What a settlement carried on ``task.completed`` is recorded as processed under: a task's
    result keeps its event id when a re-run makes a new final call, so the reservation is part of it."""
    return f"{event_id}/{reservation_id}"


def _settlement(reservation_id: str, row: asyncpg.Record | None) -> Settlement | None:
    if row is None:
        return None
    return Settlement(
        reservation_id, float(row["r_est_usd"]), int(row["r_est_tokens"]), row["r_agent"], row["r_goal_id"]
    )


async def settled_by(pool: asyncpg.Pool, event_id: str, reservation_id: str) -> Settlement | None:
    """The settlement ``event_id`` already made (its request redelivered after the ledger committed,
    e.g. the service died before publishing ``budget.settled``); None if it made none."""
    row = await pool.fetchrow(
        f"""SELECT r.est_usd, r.est_tokens, r.agent, r.goal_id FROM {S}.budget_reservations r
            WHERE r.id = $3 AND r.status = 'settled' AND EXISTS (
                SELECT 1 FROM {S}.processed_events p WHERE p.consumer = $1 AND p.event_id = $2)""",
        SETTLE_CONSUMER,
        event_id,
        reservation_id,
    )
    if row is None:
        return None
    return Settlement(reservation_id, float(row["est_usd"]), int(row["est_tokens"]), row["agent"], row["goal_id"])


async def expire_reservations(pool: asyncpg.Pool, older_than_s: float) -> int:
    """Reservations never settled (the caller died) are charged at their estimate."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT id, est_usd, est_tokens FROM {S}.budget_reservations WHERE status = 'reserved' "
            "AND created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT 100 "
            "FOR UPDATE SKIP LOCKED",
            older_than_s,
        )
        for row in rows:
            await conn.fetchrow(
                f"SELECT * FROM {S}.release($1, $2, $3, 'expired')", row["id"], row["est_usd"], row["est_tokens"]
            )
    return len(rows)


async def report(pool: asyncpg.Pool, tenant: str | None, now: dt.datetime) -> list[BudgetLine]:
    """Spend against caps in the current day and month."""
    keys = list(period_keys(now).values())
    rows = await pool.fetch(
        f"SELECT * FROM {S}.budget_counters WHERE ($1::text IS NULL OR tenant = $1) "
        "AND period_key = ANY($2::text[]) ORDER BY tenant, scope, name, period",
        tenant,
        keys,
    )
    return [
        BudgetLine(
            tenant=r["tenant"],
            scope=r["scope"],
            name=r["name"],
            period=r["period"],
            period_key=r["period_key"],
            used_usd=float(r["used_usd"]),
            reserved_usd=float(r["reserved_usd"]),
            cap_usd=None if r["cap_usd"] is None else float(r["cap_usd"]),
            used_tokens=int(r["used_tokens"]),
            reserved_tokens=int(r["reserved_tokens"]),
            cap_tokens=r["cap_tokens"],
        )
        for r in rows
    ]


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
