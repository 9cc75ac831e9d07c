"""`agentos agents` lists the fleet from the log and the live replicas, on an embedded NATS of its
own (so no other test's agents are in its log): an agent with a replica reporting health is up,
one whose replicas all retired is retired, one halted by a kill switch says by which, and one
whose replica never retired and reports no health is down, which exits 1 with a PROBLEM line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentos_kernel import Bus, KernelSettings, control
from agentos_kernel.embedded import EmbeddedNats
from agentos_schemas import subjects as s
from agentos_schemas.charter import Charter
from agentos_schemas.events import AgentAnnounced, AgentRetired

pytestmark = pytest.mark.connected  # starts servers of its own


@pytest.fixture
async def own_bus(tmp_path: Path) -> AsyncIterator[Bus]:
    nats = EmbeddedNats(tmp_path / "nats", sync="default")
    url = nats.start()
    bus = await Bus.connect(KernelSettings(nats_url=url, state_dir=tmp_path), source="test")
    await bus.provision()
    try:
        yield bus
    finally:
        await bus.close()
        nats.stop()


async def announce(bus: Bus, agent: str, instance: str, *, tools: tuple[str, ...] = ()) -> None:
    charter = Charter(name=agent, capabilities=(agent,), model="fast", tools=tools)
    await bus.publish(
        bus.new(
            AgentAnnounced(
                agent=agent, version=charter.version, capabilities=(agent,), instance=instance, charter=charter
            )
        )
    )


async def report_health(bus: Bus, instance: str, *, age_s: float = 0.0) -> None:
    kv = await bus.js.key_value(s.HEALTH_BUCKET)
    await kv.put(
        f"specialist.{instance}",
        json.dumps({"service": "specialist", "instance": instance, "status": "ok", "ts": time.time() - age_s}).encode(),
    )


async def agents(bus: Bus, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env.update(AGENTOS_NATS_URL=bus.settings.nats_url or "", AGENTOS_STATE_DIR="/nonexistent", COLUMNS="200")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentos_cli",
        "agents",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_agents_lists_state_replicas_and_halts(own_bus: Bus) -> None:
    await announce(own_bus, "research", "r-1", tools=("search_documents",))
    await announce(own_bus, "research", "r-2", tools=("search_documents",))  # a second replica, also up
    await report_health(own_bus, "r-1")
    await report_health(own_bus, "r-2")
    await announce(own_bus, "writer", "w-1")
    await own_bus.publish(own_bus.new(AgentRetired(agent="writer", instance="w-1")))
    await announce(own_bus, "mailer", "m-1")
    await report_health(own_bus, "m-1")
    await control.set_halt(own_bus.js, control.Halt(scope="agent", target="mailer", by="alice", reason="runaway"))

    code, out, err = await agents(own_bus, "--format", "json")
    assert code == 0, err
    found = {r["agent"]: r for r in json.loads(out)}
    assert {n: (r["state"], r["replicas up"]) for n, r in found.items()} == {
        "research": ("up", 2),
        "writer": ("retired", 0),
        "mailer": ("halted", 1),
    }
    assert found["research"]["tools"] == "search_documents" and found["research"]["model"] == "fast"
    assert "alice: runaway" in found["mailer"]["halted by"]

    code, out, _ = await agents(own_bus)
    assert code == 0 and "research" in out and "3 agent(s)" in out and "PROBLEM" not in out


async def test_an_agent_whose_replica_crashed_is_down_and_fails(own_bus: Bus) -> None:
    await announce(own_bus, "research", "r-1")
    await report_health(own_bus, "r-1")
    await announce(own_bus, "planner-helper", "p-1")  # crashed: never retired, no health
    await announce(own_bus, "stale", "s-1")
    await report_health(own_bus, "s-1", age_s=40)  # hangs: its last heartbeat is old

    code, out, _ = await agents(own_bus)
    assert code == 1, out
    assert "PROBLEM agent 'planner-helper' has no replica up" in out.replace("\n", " ")
    assert "PROBLEM agent 'stale'" in out.replace("\n", " ")
    code, out, _ = await agents(own_bus, "--format", "json")
    assert code == 1
    assert {r["agent"]: r["state"] for r in json.loads(out)} == {
        "research": "up",
        "planner-helper": "down",
        "stale": "down",
    }


async def test_agents_with_an_empty_fleet_says_so(own_bus: Bus) -> None:
    code, out, _ = await agents(own_bus)
    assert code == 0 and "no agent has been announced" in out
