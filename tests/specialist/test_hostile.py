"""A hostile MCP server (tests/specialist/mcp_servers/hostile.py, over stdio): each misbehaviour
has a named outcome, no task hangs, and a task on another connector is not affected.

| misbehaviour | outcome |
|---|---|
| a tool description carrying an injection | ``quarantined`` at first sight (never offered) until approved |
| a definition changed after approval (rug pull) | ``quarantined`` until ``agentos connectors approve`` |
| a 5 MB result | cut to ``max_result_bytes`` for the prompt; the whole kept as ``tool.result_stored`` |
| a result violating its outputSchema | ``ERROR … violates the tool's outputSchema``; none of it reaches the prompt |
| a server that hangs | the call times out, the server gets ``notifications/cancelled`` |
| a slow call reporting progress | runs past ``call_timeout_s`` while it reports, never past ``max_call_s`` |
| a server crashing mid-call | the call fails at once; the next one restarts the server |
| repeated failures | the breaker opens: ``connector.degraded``, the task fails with the reason |
| a flood of ``list_changed`` | re-read at most once per ``relist_min_s``; other tasks unaffected |
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agentos_cli.main import app
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import eventually, unique
from agentos_schemas.events.connectors import ConnectorAnnounced, ConnectorDegraded, ToolResultStored
from agentos_specialist.connectors.ring import ConnectorRing
from agentos_specialist.connectors.spec import Connector
from typer.testing import CliRunner, Result

from tests.policy.conftest import ScriptedLLM, logged, logged_at_least, tool_call
from tests.specialist.conftest import connector, ring, run

ROOT = Path(__file__).resolve().parents[2]


def hostile(name: str, state: Path, **limits: Any) -> Connector:
    limits = {"call_timeout_s": 2, "breaker_failures": 3, "max_result_bytes": 4000, "relist_min_s": 1, **limits}
    args = f"[-m, tests.specialist.mcp_servers.hostile, '{state}']"
    text = (
        f"name: {name}\n"
        f"stdio: {{command: {sys.executable}, args: {args}, cwd: '{ROOT}'}}\n"
        f"limits: {limits}\n"
        "tools:\n  '*': {access: read, data_classes: [public]}\n"
    )
    return connector(text)


@pytest.fixture
async def setup(bus: Bus, tmp_path: Path) -> AsyncIterator[tuple[ConnectorRing, str, Path]]:
    name = unique("hostile").lower().replace("_", "-")[:30]
    the_ring = ring(bus, hostile(name, tmp_path))
    try:
        yield the_ring, name, tmp_path
    finally:
        await the_ring.close()


def answer_after(*calls: Any) -> ScriptedLLM:
    return ScriptedLLM([*[[c] for c in calls], {"answer": "done"}])


async def results(the_ring: ConnectorRing, bus: Bus, tenant: str, name: str, *calls: Any) -> tuple[Any, list[str]]:
    outcome, progress, _ = await run(answer_after(*calls), the_ring, bus, tenant, unique("g"), "tester", (f"{name}.*",))
    return outcome, [m["content"] for m in progress.messages if m.get("role") == "tool"]


async def test_an_injected_description_is_quarantined_and_a_cli_approval_offers_it(
    bus: Bus, settings: KernelSettings, setup: tuple[ConnectorRing, str, Path], tmp_path: Path
) -> None:
    the_ring, name, _ = setup
    offered = await the_ring.resolve((f"{name}.*",))
    assert f"{name}.greet" in offered and f"{name}.lookup" not in offered
    (announced,) = [a for a in await logged(bus, "default", ConnectorAnnounced) if a.connector == name]
    lookup = next(t for t in announced.tools if t.name == f"{name}.lookup")
    assert lookup.state == "quarantined" and "addresses the model" in lookup.reason
    listed = await cli(settings, the_ring.connectors[name], tmp_path, "connectors", "list")
    assert f"quarantined  {name}.lookup" in listed.output, listed.output
    approved = await cli(settings, the_ring.connectors[name], tmp_path, "connectors", "approve", f"{name}.lookup")
    assert approved.exit_code == 0 and f"approved {name}.lookup at sha256:" in approved.output, approved.output
    assert f"{name}.lookup" in await the_ring.resolve((f"{name}.*",))


async def cli(settings: KernelSettings, spec: Connector, folder: Path, *args: str) -> Result:
    (folder / "connectors").mkdir(exist_ok=True)
    (folder / "connectors" / f"{spec.name}.yaml").write_text(spec.model_dump_json(exclude_defaults=True))
    env = {
        "AGENTOS_NATS_URL": settings.nats_url or "",
        "AGENTOS_STATE_DIR": "/nonexistent",
        "AGENTOS_CONNECTORS_DIR": str(folder / "connectors"),
        "COLUMNS": "250",
    }
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_a_changed_definition_is_quarantined_until_approved(
    bus: Bus, settings: KernelSettings, setup: tuple[ConnectorRing, str, Path], tmp_path: Path
) -> None:
    the_ring, name, state = setup
    first = (await the_ring.resolve((f"{name}.greet",)))[f"{name}.greet"]
    (state / "rugpull").touch()
    started = time.monotonic()
    await the_ring.server(name).stop()  # the server is upgraded: the next use starts the new one
    assert time.monotonic() - started < 2, "a stop ends the tool-list listening at once"
    assert await the_ring.resolve((f"{name}.greet",)) == {}, "the changed tool is not offered"
    announced = [a for a in await logged(bus, "default", ConnectorAnnounced) if a.connector == name][-1]
    greet = next(t for t in announced.tools if t.name == f"{name}.greet")
    assert greet.state == "quarantined" and greet.pinned_hash == first.classified.definition_hash
    assert "changed since it was approved" in greet.reason
    approved = await cli(settings, the_ring.connectors[name], tmp_path, "connectors", "approve", f"{name}.greet")
    assert approved.exit_code == 0, approved.output
    again = (await the_ring.resolve((f"{name}.greet",)))[f"{name}.greet"]
    assert again.classified.definition_hash == greet.definition_hash != first.classified.definition_hash
    assert "evil.test" in again.description


async def test_a_5mb_result_is_cut_for_the_prompt_and_kept_whole(
    bus: Bus, policy_service: ServiceContext, setup: tuple[ConnectorRing, str, Path], tenant: str
) -> None:
    the_ring, name, _ = setup
    outcome, (result,) = await results(the_ring, bus, tenant, name, tool_call(f"{name}__big", {}))
    assert outcome.ok, outcome.reason
    cut = re.search(r"\[result cut at 4000 of (\d+) bytes; the whole is event ([0-9a-f-]+)\]$", result)
    assert len(result) < 4300 and cut is not None, result[-200:]
    (stored,) = await logged_at_least(bus, tenant, ToolResultStored, 1, timeout=20)
    assert stored.size_bytes == int(cut.group(1)) > 5 * 1024 * 1024  # the structured {"result": …}
    assert stored.content.count("A") == 5 * 1024 * 1024 and stored.tool == f"{name}.big"


async def test_a_result_violating_its_output_schema_never_reaches_the_prompt(
    bus: Bus, policy_service: ServiceContext, setup: tuple[ConnectorRing, str, Path], tenant: str
) -> None:
    the_ring, name, _ = setup
    outcome, (result,) = await results(the_ring, bus, tenant, name, tool_call(f"{name}__liar", {"city": "Oslo"}))
    assert outcome.ok, outcome.reason
    assert result.startswith(f"ERROR: {name}.liar failed:") and "violates the tool's outputSchema" in result
    assert "'very warm' is not of type 'number'" in result  # the validator's words, not the data as data


async def test_a_hanging_call_times_out_and_is_cancelled_while_another_task_goes_on(
    bus: Bus, policy_service: ServiceContext, setup: tuple[ConnectorRing, str, Path], tenant: str
) -> None:
    the_ring, name, state = setup
    started = time.monotonic()
    hung, timely = await asyncio.gather(
        results(the_ring, bus, tenant, name, tool_call(f"{name}__hang", {})),
        results(the_ring, bus, tenant, name, tool_call(f"{name}__greet", {"name": "ada"})),
    )
    assert time.monotonic() - started < 8, "no task hangs"
    assert hung[0].ok and "timed out after 2s" in hung[1][0]
    assert timely[0].ok and "hello ada" in timely[1][0], "the other task was not held up"

    async def cancelled() -> bool:
        return "hang cancelled" in (state / "events.log").read_text()

    await eventually(cancelled, timeout=5)  # the server got notifications/cancelled and stopped the work


async def test_a_call_reporting_progress_runs_past_the_idle_timeout_but_not_past_the_cap(
    bus: Bus, policy_service: ServiceContext, tenant: str, tmp_path: Path
) -> None:
    name = unique("hostile-slow").lower().replace("_", "-")[:30]
    the_ring = ring(bus, hostile(name, tmp_path, call_timeout_s=0.6, max_call_s=2.5))
    try:
        started = time.monotonic()
        slow = tool_call(f"{name}__slow", {"steps": 4, "every_s": 0.4})  # 1.6 s of work, silent 0.4 s at a time
        (outcome, (answer,)) = await results(the_ring, bus, tenant, name, slow)
        assert outcome.ok and "done after 4 steps" in answer, answer
        assert time.monotonic() - started > 1.5
        started = time.monotonic()
        long = tool_call(f"{name}__slow", {"steps": 40, "every_s": 0.3})  # 12 s of work: over the 2.5 s cap
        (outcome, (answer,)) = await results(the_ring, bus, tenant, name, long)
        assert "timed out after" in answer and "progress notifications; at most 2.5s" in answer, answer
        assert time.monotonic() - started < 6
    finally:
        await the_ring.close()


async def test_a_crash_mid_call_fails_the_call_and_the_server_is_restarted(
    bus: Bus, policy_service: ServiceContext, setup: tuple[ConnectorRing, str, Path], tenant: str
) -> None:
    the_ring, name, _ = setup
    started = time.monotonic()
    outcome, (crashed, greeted) = await results(
        the_ring, bus, tenant, name, tool_call(f"{name}__crash", {}), tool_call(f"{name}__greet", {"name": "bo"})
    )
    assert time.monotonic() - started < 10
    assert outcome.ok and crashed.startswith(f"ERROR: {name}.crash failed:")
    assert "hello bo" in greeted, "the next call started the server again"
    assert the_ring.server(name).restarts >= 1


async def test_repeated_failures_open_the_breaker_degrade_the_connector_and_fail_the_task(
    bus: Bus, policy_service: ServiceContext, setup: tuple[ConnectorRing, str, Path], tenant: str
) -> None:
    the_ring, name, _ = setup
    crash = tool_call(f"{name}__crash", {})
    outcome, texts = await results(the_ring, bus, tenant, name, crash, crash, crash, crash)
    assert not outcome.ok and outcome.code == "error" and "circuit open" in outcome.reason, outcome
    assert len(texts) == 4 and "circuit open after 3 failures" in texts[-1]
    degraded = [d for d in await logged(bus, "default", ConnectorDegraded) if d.connector == name]
    assert len(degraded) == 1 and degraded[0].failures == 3
    started = time.monotonic()
    with pytest.raises(Exception, match="circuit open"):
        await the_ring.resolve((f"{name}.*",))
    assert time.monotonic() - started < 1, "a degraded connector fails at once"


async def test_a_flood_of_list_changed_is_not_obeyed_faster_than_relist_min_s(
    bus: Bus, policy_service: ServiceContext, setup: tuple[ConnectorRing, str, Path], tenant: str
) -> None:
    the_ring, name, _ = setup
    flood = tool_call(f"{name}__flood", {})
    greet = tool_call(f"{name}__greet", {"name": "cy"})
    outcome, texts = await results(the_ring, bus, tenant, name, flood, greet, greet)
    server = the_ring.server(name)
    assert outcome.ok and "flooded" in texts[0] and "hello cy" in texts[-1]
    assert server.changes >= 1 and server.relists <= 2, (server.changes, server.relists)
