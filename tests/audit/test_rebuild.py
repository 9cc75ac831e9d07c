"""`rebuild`: the log projected again into a fresh schema equals the live projection, row for row."""

from __future__ import annotations

import asyncpg
import pytest
from agentos_audit.projector import Projector
from agentos_audit.rebuild import rebuild
from agentos_kernel import Bus
from agentos_kernel.testing import unique
from agentos_schemas import codec, event_subject
from agentos_schemas.events import GoalSubmitted

from tests.audit.conftest import caught_up, publish_all
from tests.audit.workload import build


@pytest.mark.parametrize("workers", [0, 1], ids=["inline", "worker-process"])
async def test_rebuild_equals_the_live_projection(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str, workers: int
) -> None:
    await publish_all(bus, build(bus, tenant, unique("g")).events)
    await bus.publish_raw(f"agentos.{tenant}.goal.submitted", b"{not json", {"Nats-Msg-Id": unique("m")})
    twice = bus.new(GoalSubmitted(goal_id=unique("g"), text="stored twice"), tenant=tenant)
    for n in range(2):
        await bus.publish_raw(
            event_subject(tenant, twice.type),
            codec.encode(twice),
            {**codec.headers_for(twice), "Nats-Msg-Id": f"{twice.id}-{n}"},
        )
    last = await caught_up(bus, pool, audit.schema)
    report = await rebuild(bus, pool, audit.schema, workers=workers, batch=64)
    assert report.equal and report.first_difference is None, report
    lo = await pool.fetchval(f"SELECT min(seq) FROM {audit.schema}.chain")
    assert report.up_to >= last and report.chain_rows == report.up_to - lo + 1 and report.event_rows > 0
    assert not await pool.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", report.target)


async def test_rebuild_names_the_first_row_that_differs(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str
) -> None:
    await publish_all(bus, build(bus, tenant, unique("g")).events)
    await caught_up(bus, pool, audit.schema)
    await audit.stop()
    seq = await pool.fetchval(f"SELECT max(seq) FROM {audit.schema}.events WHERE tenant = $1 AND tokens > 0", tenant)
    await pool.execute(f"UPDATE {audit.schema}.events SET tokens = tokens + 1 WHERE seq = $1", seq)
    report = await rebuild(bus, pool, audit.schema, keep=True)
    assert not report.equal and report.first_difference == seq
    assert await pool.fetchval(
        f"SELECT tokens FROM {report.target}.events WHERE seq = $1", seq
    ) + 1 == await pool.fetchval(f"SELECT tokens FROM {audit.schema}.events WHERE seq = $1", seq)
    await pool.execute(f"DROP SCHEMA {report.target} CASCADE")
