"""A projection that stops advancing is never reported healthy: `agentos status` shows its position
against the log's last sequence and exits 1 with a PROBLEM line, and `agentos audit verify` says up
to which sequence it verified and fails while the projection is behind the log.

The projector is stopped for real: a transaction holds a lock on its chain table that writes wait for, so
its next write waits, while the log moves on."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from agentos_audit.lifecycle import ensure_schema
from agentos_audit.projector import Projector
from agentos_audit.schema import drop_schema
from agentos_audit.signing import Signer, public_path
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext, heartbeat
from agentos_kernel.testing import eventually, unique

from tests.audit.conftest import caught_up, publish_all
from tests.audit.workload import build

AGENTOS = str(Path(sys.executable).parent / "agentos")


@pytest.fixture
async def service(
    bus: Bus, pool: asyncpg.Pool, signer: Signer, settings: KernelSettings, key_file: Path
) -> AsyncIterator[tuple[Projector, dict[str, str]]]:
    """A projector of its own schema, reporting in the health bucket as the audit service does."""
    schema = unique("audit_")
    await ensure_schema(pool, schema)
    ctx = ServiceContext(name="audit", bus=bus, settings=settings, instance=unique("i"))
    projector = await Projector(
        bus,
        pool,
        schema=schema,
        durable=unique("audit"),
        signer=signer,
        batch=64,
        checkpoint_idle_s=0.5,
        status=ctx.status,
    ).start()
    beat = asyncio.create_task(heartbeat(ctx, time.time(), every=0.3))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env.update(
        {
            "AGENTOS_NATS_URL": settings.nats_url or "",
            "AGENTOS_DATABASE_URL": settings.database_url or "",
            "AGENTOS_AUDIT_SCHEMA_NAME": schema,
            "AGENTOS_STATE_DIR": str(key_file.parent),
        }
    )
    try:
        yield projector, env
    finally:
        beat.cancel()
        await projector.stop()
        kv = await bus.js.key_value("AGENTOS_HEALTH")
        await kv.delete(f"audit.{ctx.instance}")
        await bus.js.delete_consumer("AGENTOS_EVENTS", projector.durable)
        await drop_schema(pool, schema)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTOS, *args], env=env, capture_output=True, text=True, timeout=120)


def projection_of(report: dict[str, Any], schema: str) -> dict[str, Any]:
    return next(p for p in report["projections"] if schema in p["projection"])


async def test_a_stalled_projection_turns_status_red_and_fails_verify(
    bus: Bus, pool: asyncpg.Pool, service: tuple[Projector, dict[str, str]], tenant: str, key_file: Path
) -> None:
    projector, env = service
    schema = projector.schema
    await publish_all(bus, build(bus, tenant, unique("g")).events)
    last = await caught_up(bus, pool, schema)
    await asyncio.sleep(0.5)  # a heartbeat after the catch-up
    ok = cli(env, "status", "--json", "--stall-after", "2")
    row = projection_of(json.loads(ok.stdout), schema)
    assert row["head_seq"] >= last and row["behind"] == 0, row
    assert not [p for p in json.loads(ok.stdout)["problems"] if schema in p]
    assert any(d["dependency"] == "Postgres" and d["ok"] for d in json.loads(ok.stdout)["dependencies"])

    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute(f"LOCK TABLE {schema}.chain IN EXCLUSIVE MODE")  # writes wait, reads do not
        await publish_all(bus, build(bus, tenant, unique("g")).events)
        # (the log's end: the goal's 13 events, and any checkpoint the projector published meanwhile)
        end = (await bus.js.stream_info("AGENTOS_EVENTS")).state.last_seq
        assert end >= last + 13
        await asyncio.sleep(3.0)
        red = cli(env, "status", "--stall-after", "2")
        assert red.returncode == 1, red.stdout + red.stderr
        problem = next(line for line in red.stdout.splitlines() if "PROBLEM" in line and schema in line)
        at = re.search(r"at seq (\d+) of (\d+)", problem)  # (a checkpoint may have joined the log's end)
        assert "stalled" in problem and at and int(at.group(1)) == last and int(at.group(2)) >= end, problem
        verify = cli(
            env, "audit", "verify", "--schema", schema, "--wait", "1", "--public-key", str(public_path(key_file))
        )
        assert verify.returncode == 1, verify.stdout + verify.stderr
        assert re.search(rf"verified up to stream seq {last}\b", verify.stdout), verify.stdout
        assert "DIVERGENCE" in verify.stdout and "behind" in verify.stdout, verify.stdout

    await caught_up(bus, pool, schema)
    verify = cli(env, "audit", "verify", "--schema", schema, "--public-key", str(public_path(key_file)))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    verified = re.search(r"verified up to stream seq (\d+);", verify.stdout)
    assert verified and int(verified.group(1)) >= end, verify.stdout

    async def green() -> bool:
        report = json.loads(cli(env, "status", "--json", "--stall-after", "2").stdout)
        return projection_of(report, schema)["behind"] == 0 and not [p for p in report["problems"] if schema in p]

    await eventually(green, timeout=30, every=0.5)


def test_status_has_a_red_line_for_each_unreachable_dependency(settings: KernelSettings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env.update(
        {
            "AGENTOS_NATS_URL": settings.nats_url or "",
            "AGENTOS_STATE_DIR": str(tmp_path),
            "AGENTOS_DATABASE_URL": f"postgresql://postgres@/agentos?host={tmp_path}",
        }
    )  # no server there
    pg_down = cli(env, "status", "--json")
    assert pg_down.returncode == 1, pg_down.stdout + pg_down.stderr
    report = json.loads(pg_down.stdout)
    assert {d["dependency"]: d["ok"] for d in report["dependencies"]} == {"NATS": True, "Postgres": False}
    assert any(p.startswith("Postgres is unreachable") for p in report["problems"]), report["problems"]

    env["AGENTOS_NATS_URL"] = "nats://127.0.0.1:1"
    both_down = cli(env, "status")
    assert both_down.returncode == 1, both_down.stdout + both_down.stderr
    assert "Traceback" not in both_down.stdout + both_down.stderr
    lines = [line for line in both_down.stdout.splitlines() if line.startswith("PROBLEM")]
    assert [line.split()[1] for line in lines] == ["NATS", "Postgres"], both_down.stdout
