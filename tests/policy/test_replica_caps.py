"""Policy replicas starting together record the loaded version's budget caps once, not once each."""

from __future__ import annotations

import asyncio

import asyncpg
from agentos_kernel.testing import unique
from agentos_policy import ledger, schema


async def test_replicas_recording_caps_at_once_keep_one_copy(pool: asyncpg.Pool) -> None:
    await schema.migrate_schema(pool)
    version = unique("v")
    caps = [
        {"tenant": "*", "scope": "tenant", "name": "*", "period": "day", "usd": 10.0, "tokens": 1000},
        {"tenant": "*", "scope": "agent", "name": "research", "period": "day", "usd": 2.0, "tokens": None},
    ]
    for _ in range(5):
        await asyncio.gather(*(ledger.record_caps(pool, version, caps) for _ in range(6)))
        rows = await pool.fetchval("SELECT count(*) FROM policy.budget_caps WHERE policy_version = $1", version)
        assert rows == len(caps)
