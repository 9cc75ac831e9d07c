"""The projector survives Postgres going away: a real server stopped for a few seconds in the middle
of a projection, then started again on the same data directory, and the projection catches up with
everything published meanwhile and verifies."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from agentos_audit.lifecycle import ensure_schema
from agentos_audit.projector import Projector
from agentos_audit.signing import Signer
from agentos_audit.verify import verify
from agentos_kernel import Bus
from agentos_kernel.db import create_pool
from agentos_kernel.embedded import EmbeddedPostgres
from agentos_kernel.testing import unique

from tests.audit.conftest import caught_up, publish_all
from tests.audit.workload import build


async def _publish_for(bus: Bus, tenant: str, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    end, goals = loop.time() + seconds, 0
    while loop.time() < end:
        await publish_all(bus, build(bus, tenant, unique("g")).events)
        goals += 1
        await asyncio.sleep(0.2)
    return goals


async def test_projector_catches_up_after_postgres_was_stopped(bus: Bus, tenant: str, signer: Signer) -> None:
    root = Path(tempfile.mkdtemp(prefix="agentos-test-"))  # where the session's own Postgres lives too
    pg = EmbeddedPostgres(root / "postgres")
    url = await asyncio.to_thread(pg.start)
    pool = await create_pool(url, max_size=4)
    schema = unique("audit_")
    await ensure_schema(pool, schema)
    projector = await Projector(
        bus,
        pool,
        schema=schema,
        durable=unique("audit"),
        signer=signer,
        batch=32,
        checkpoint_every=100,
        checkpoint_idle_s=0.5,
        status={},
    ).start()
    try:
        await publish_all(bus, build(bus, tenant, unique("g")).events)
        await caught_up(bus, pool, schema)
        publishing = asyncio.create_task(_publish_for(bus, tenant, 9.0))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(pg.stop)  # mid-projection: Postgres is gone for 5 s
        await asyncio.sleep(5.0)
        assert projector.status["audit_error"], "the outage is visible in the service's status"
        await asyncio.to_thread(pg.start)
        goals = await publishing
        await caught_up(bus, pool, schema, timeout=60)
        assert projector.status["audit_error"] is None, "the error clears once the projection moves again"
        count = await pool.fetchval(f"SELECT count(*) FROM {schema}.events WHERE tenant = $1", tenant)
        assert count == 13 * (goals + 1), "every event published during the outage was projected"
        report = await verify(bus, pool, schema, signer.public)
        assert report.ok, report.divergences
    finally:
        await projector.stop()
        await bus.js.delete_consumer("AGENTOS_EVENTS", projector.durable)
        await pool.close()
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(root, ignore_errors=True)
