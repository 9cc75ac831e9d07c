"""`agentos halt --goal` names what the switch takes (a goal id); the old `--workflow` still works,
with a deprecation warning. Through the real CLI against the session's NATS."""

from __future__ import annotations

import asyncio

from agentos_cli.main import app
from agentos_kernel import Bus, KernelSettings, control
from agentos_kernel.testing import unique
from typer.testing import CliRunner, Result


async def cli(settings: KernelSettings, *args: str) -> Result:
    env = {"AGENTOS_NATS_URL": settings.nats_url or "", "AGENTOS_STATE_DIR": "/nonexistent", "COLUMNS": "200"}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def keys(bus: Bus) -> set[str]:
    return {h.key for h in await control.list_halts(bus.js)}


async def test_halt_takes_goal_and_the_old_flag_warns(bus: Bus, settings: KernelSettings) -> None:
    goal = unique("g")
    halted = await cli(settings, "halt", "--goal", goal, "--reason", "runaway")
    assert halted.exit_code == 0, halted.output
    assert f"halt.workflow.{goal}" in await keys(bus) and "deprecated" not in halted.output
    resumed = await cli(settings, "resume", "--workflow", goal)
    assert resumed.exit_code == 0, resumed.output
    assert "--workflow is deprecated" in resumed.stderr and "--goal" in resumed.stderr
    assert f"halt.workflow.{goal}" not in await keys(bus)
    old = await cli(settings, "halt", "--workflow", goal)
    assert old.exit_code == 0 and f"halt.workflow.{goal}" in await keys(bus), old.output
    assert (await cli(settings, "resume", "--goal", goal)).exit_code == 0
    both = await cli(settings, "halt", "--goal", goal, "--workflow", unique("g"))
    assert both.exit_code == 2 and "different goals" in both.output
    usage = await cli(settings, "halt", "--help")
    assert "--goal" in usage.stdout and "--workflow" not in usage.stdout
