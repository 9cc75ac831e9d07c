"""Audit replicas starting together put their schema in place without deadlocking one another."""

from __future__ import annotations

import asyncio

import asyncpg
from agentos_audit.lifecycle import ensure_schema
from agentos_audit.schema import drop_schema
from agentos_kernel import KernelSettings
from agentos_kernel.testing import unique


async def test_replicas_ensuring_one_schema_at_once_all_succeed(settings: KernelSettings) -> None:
    url = settings.database_url
    pools = [await asyncpg.create_pool(url, min_size=1, max_size=3) for _ in range(3)]
    schema = unique("audit_")
    try:
        for _ in range(2):  # a fresh schema, then one that exists (views replaced, grants again)
            await asyncio.gather(*(ensure_schema(p, schema) for p in pools))
    finally:
        await drop_schema(pools[0], schema)
        for p in pools:
            await p.close()
