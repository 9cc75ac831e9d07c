"""`agentos audit export --since/--until` select by the log's time (when AgentOS took each event);
`--vendor-since/--vendor-until` by the time the event carries (a vendor's clock for a mapped
webhook). Through the real CLI against the session's NATS and Postgres."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import asyncpg
from agentos_audit.projector import Projector
from agentos_cli.main import app
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.testing import unique
from agentos_schemas.events import GoalSubmitted
from typer.testing import CliRunner

from tests.audit.conftest import caught_up

VENDOR_TIME = dt.datetime(2024, 4, 17, 17, 18, 10, tzinfo=dt.UTC)


async def export(settings: KernelSettings, tmp_path: Path, schema: str, tenant: str, *args: str) -> set[str]:
    env = {
        "AGENTOS_NATS_URL": settings.nats_url or "",
        "AGENTOS_DATABASE_URL": settings.database_url or "",
        "AGENTOS_STATE_DIR": str(tmp_path),
        "AGENTOS_AUDIT_SCHEMA_NAME": schema,
    }
    result = await asyncio.to_thread(CliRunner().invoke, app, ["audit", "export", "--tenant", tenant, *args], env=env)
    assert result.exit_code == 0, result.output
    return {json.loads(line)["id"] for line in result.stdout.splitlines() if line.strip()}


async def test_since_is_the_logs_time_and_vendor_since_the_events_own(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, settings: KernelSettings, tenant: str, tmp_path: Path
) -> None:
    goal = unique("g")
    old = bus.new(
        GoalSubmitted(goal_id=goal, text="a ticket from 2024"),
        tenant=tenant,
        correlationid=goal,
        subject=f"goal/{goal}",
    )
    old.time = VENDOR_TIME  # the source's clock, as a mapped webhook carries it
    await bus.publish(old)
    await caught_up(bus, pool, audit.schema)
    s = audit.schema
    assert old.id in await export(settings, tmp_path, s, tenant, "--since", "10m")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert old.id not in await export(settings, tmp_path, s, tenant, "--since", later)
    assert old.id not in await export(settings, tmp_path, s, tenant, "--until", "10m")
    assert old.id not in await export(settings, tmp_path, s, tenant, "--vendor-since", "10m")
    assert old.id in await export(
        settings, tmp_path, s, tenant, "--vendor-since", "2024-04-17", "--vendor-until", "2024-04-18", "--since", "1h"
    )
