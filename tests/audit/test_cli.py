"""`agentos audit …` end to end through the CLI, against the session's NATS and Postgres."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import asyncpg
from agentos_audit.projector import Projector
from agentos_audit.signing import public_path
from agentos_cli.main import app
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.testing import unique
from click.testing import Result
from typer.testing import CliRunner

from tests.audit.conftest import caught_up, publish_all
from tests.audit.workload import build


async def cli(settings: KernelSettings, tmp_path: Path, schema: str, *args: str) -> Result:
    env = {
        "AGENTOS_NATS_URL": settings.nats_url or "",
        "AGENTOS_DATABASE_URL": settings.database_url or "",
        "AGENTOS_STATE_DIR": str(tmp_path),
        "AGENTOS_AUDIT_SCHEMA_NAME": schema,
        "COLUMNS": "200",
    }
    return await asyncio.to_thread(CliRunner().invoke, app, ["audit", *args], env=env)


async def test_cli_answers_and_verifies(
    bus: Bus,
    pool: asyncpg.Pool,
    audit: Projector,
    settings: KernelSettings,
    tenant: str,
    key_file: Path,
    tmp_path: Path,
) -> None:
    w = build(bus, tenant, unique("g"))
    await publish_all(bus, w.events)
    await caught_up(bus, pool, audit.schema)
    s = audit.schema
    result = await cli(
        settings, tmp_path, s, "query", "--tenant", tenant, "--type", "task.completed", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    assert {r["id"] for r in json.loads(result.stdout)} == {e.id for e in w.of("task.completed")}
    result = await cli(settings, tmp_path, s, "cost", w.goal_id, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.exit_code == 0 and {(r["agent"], r["model"]) for r in rows} == {
        ("research", "smart"),
        ("research", "backup"),
        ("writer", "smart"),
        ("test", "fast"),
    }
    result = await cli(settings, tmp_path, s, "personal-data", "--since", "1d", "--tenant", tenant, "--format", "json")
    assert [a["agent"] for a in json.loads(result.stdout)] == ["research"]
    result = await cli(settings, tmp_path, s, "trace", w.goal_id)
    assert result.exit_code == 0 and "research@2" in result.stdout and "task.completed" in result.stdout
    result = await cli(settings, tmp_path, s, "denied", "--tenant", tenant, "--format", "json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 2
    result = await cli(settings, tmp_path, s, "verify", "--public-key", str(public_path(key_file)))
    assert result.exit_code == 0 and "OK:" in result.stdout, result.output
    await pool.execute(f"UPDATE {s}.events SET agent = 'mallory' WHERE id = $1", w.events[3].id)
    result = await cli(settings, tmp_path, s, "verify", "--public-key", str(public_path(key_file)))
    assert result.exit_code == 1 and "first is modified" in result.stdout and "agent" in result.stdout


async def test_cli_rejects_bad_input_with_one_line(settings: KernelSettings, tmp_path: Path, audit: Projector) -> None:
    result = await cli(settings, tmp_path, audit.schema, "query", "--since", "yesterday-ish")
    assert result.exit_code == 2 and "neither a duration" in result.output and "Traceback" not in result.output
    result = await cli(settings, tmp_path, audit.schema, "query", "--format", "xml")
    assert result.exit_code == 2
