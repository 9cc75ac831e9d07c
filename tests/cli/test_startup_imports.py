"""The CLI starts without importing what its everyday commands do not use: importing its main module
imports no AgentOS service, no bus, no web, model or data library; `status`, `approvals`, `budget`
and `tail`, run for real (against the session's NATS, the policy service answering), import no
service package other than the audit settings `status` reads for the projection's schema (with
asyncpg, for its Postgres line), and none of the heavy libraries. Checked in fresh processes through sys.modules,
not with a timer (benchmarks/bench_cli_startup.py measures the time)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from agentos_kernel import KernelSettings
from agentos_kernel.service import ServiceContext

from tests.policy.conftest import policy_service

__all__ = ["policy_service"]

HEAVY = (
    "litellm",
    "fastapi",
    "starlette",
    "uvicorn",
    "pyarrow",
    "faststream",
    "httpx",
    "openai",
    "aiohttp",
    "phonenumbers",
    "agentos_policy",
    "agentos_gateway",
    "agentos_offline_model",
    "agentos_specialist",
    "agentos_memory",
    "agentos_orchestrator",
    "agentos_context_manager",
)
#: importing the CLI's main module must not even reach the bus: commands import it when they run
NOT_AT_IMPORT = (
    *HEAVY,
    "asyncpg",
    "agentos_audit",
    "agentos_kernel",
    "agentos_schemas",
    "nats",
    "pydantic",
    "pydantic_settings",
)

PROBE = """
import atexit, json, sys
names = json.loads(sys.argv[1])
atexit.register(lambda: print("IMPORTED=" + json.dumps([n for n in names if n in sys.modules]), file=sys.stderr))
from agentos_cli.main import app
app(sys.argv[2:])
"""


async def imported(args: list[str], names: tuple[str, ...], env: dict[str, str]) -> tuple[int, list[str], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        json.dumps(names),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    text = err.decode()
    line = next((ln for ln in text.splitlines() if ln.startswith("IMPORTED=")), "IMPORTED=null")
    return proc.returncode or 0, json.loads(line.removeprefix("IMPORTED=")), out.decode() + text


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    return {**env, "AGENTOS_STATE_DIR": "/nonexistent", **extra}


async def test_importing_the_cli_imports_no_bus_service_or_heavy_library() -> None:
    code, found, output = await imported(["--help"], NOT_AT_IMPORT, base_env())
    assert code == 0, output
    assert found == [], f"imported when the CLI starts: {found}"


@pytest.mark.parametrize("command", [["status"], ["approvals"], ["budget"], ["tail", "--all", "--idle-exit", "1"]])
async def test_everyday_commands_import_no_heavy_module(
    command: list[str], settings: KernelSettings, policy_service: ServiceContext
) -> None:
    code, found, output = await imported(
        command,
        HEAVY,
        base_env(AGENTOS_NATS_URL=settings.nats_url or "", AGENTOS_DATABASE_URL=settings.database_url or ""),
    )
    assert code == 0 or (command == ["status"] and code == 1 and "PROBLEM" in output), output  # 1: a problem found
    assert found == [], f"`agentos {' '.join(command)}` imported {found}"


@pytest.mark.parametrize("command", [["approvals"], ["budget"]])
async def test_request_reply_commands_do_not_build_the_event_catalogue(
    command: list[str], settings: KernelSettings, policy_service: ServiceContext
) -> None:
    """Asking the policy service needs its request/reply models, not every event type's."""
    code, found, output = await imported(
        command, ("agentos_schemas.events",), base_env(AGENTOS_NATS_URL=settings.nats_url or "")
    )
    assert code == 0, output
    assert found == [], f"`agentos {' '.join(command)}` imported {found}"
