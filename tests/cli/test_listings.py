"""Every listing command takes the same --format table|json|csv (and --json), and off a terminal
prints its tables whole instead of cutting them at 80 columns. `agentos status` says what waits for
a human, with the command that approves it. Through the real CLI against the session's NATS and
Postgres, with the policy service (strict test policy) running in-process."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

from agentos_cli.main import app
from agentos_kernel import Bus, KernelSettings, control
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import unique
from typer.testing import CliRunner, Result

from tests.policy.conftest import ask, policy_service

__all__ = ["policy_service"]


async def cli(settings: KernelSettings, *args: str, **env: str | None) -> Result:
    """The CLI as a user runs it in CI: stdout is a pipe and COLUMNS is not set."""
    full: dict[str, str | None] = {
        "AGENTOS_NATS_URL": settings.nats_url or "",
        "AGENTOS_STATE_DIR": "/nonexistent",
        "AGENTOS_DATABASE_URL": settings.database_url or "",
        "COLUMNS": None,
        "LINES": None,
        **env,
    }
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=full)


async def pending_approval(bus: Bus, tenant: str) -> str:
    decision = await ask(
        bus,
        tenant,
        "finance",
        "tool_call",
        "delete_record",
        tool="delete_record",
        goal_id=unique("g"),
        task_id="t",
        call_id=unique("c"),
        args={"id": "x"},
    )
    assert decision.decision == "require_approval" and decision.approval_id
    return decision.approval_id


def parsed(result: Result, fmt: str) -> Any:
    """The output in ``fmt``; exit 1 is `status` reporting a PROBLEM (it still prints the report)."""
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout) if fmt == "json" else list(csv.DictReader(io.StringIO(result.stdout)))


async def test_every_listing_takes_the_same_format_option(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tenant: str
) -> None:
    approval = await pending_approval(bus, tenant)
    await control.set_halt(bus.js, control.Halt("agent", unique("a"), "a long reason " * 8, "user:ops", 0.0))
    for command in (["status"], ["approvals", "--tenant", tenant], ["budget"], ["halts"]):
        alias = parsed(await cli(settings, *command, "--json"), "json")
        named = parsed(await cli(settings, *command, "--format", "json"), "json")
        assert type(alias) is type(named) and (
            alias.keys() == named.keys() if isinstance(alias, dict) else alias == named
        ), command
        rows = parsed(await cli(settings, *command, "--format", "csv"), "csv")
        assert rows or command == ["budget"], command
        bad = await cli(settings, *command, "--format", "xml")
        assert bad.exit_code == 2 and "table, json, csv" in bad.output, bad.output
    listed = parsed(await cli(settings, "approvals", "--tenant", tenant, "--format", "json"), "json")
    assert [a["approval_id"] for a in listed["approvals"]] == [approval]
    assert [
        r["id"] for r in parsed(await cli(settings, "approvals", "--tenant", tenant, "--format", "csv"), "csv")
    ] == [approval]


async def test_tables_off_a_terminal_are_not_cut_at_80_columns(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tenant: str
) -> None:
    approval = await pending_approval(bus, tenant)
    result = await cli(settings, "approvals", "--tenant", tenant)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if approval in line]
    assert len(rows) == 1, result.stdout  # the id is whole, on one line
    row = rows[0]
    assert tenant in row and "delete_record" in row and "finance" in row, result.stdout  # one row, one line
    assert "\u2026" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) > 80


async def test_status_says_what_waits_for_a_human_and_how_to_approve_it(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tenant: str
) -> None:
    approval = await pending_approval(bus, tenant)
    report = parsed(await cli(settings, "status", "--json"), "json")
    waiting = {w["approval_id"]: w for w in report["waiting"]}
    assert waiting[approval]["approve with"] == f"agentos approve {approval} --as <user>"
    table = await cli(settings, "status")
    assert table.exit_code == (1 if report["problems"] else 0), table.output
    assert "Waiting for a human" in table.stdout
    assert f"agentos approve {approval} --as <user>" in table.stdout
