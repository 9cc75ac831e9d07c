"""The context manifest records which definition hash each agent saw (issue B.1): the real
context-manager learns the connector tools' pinned hashes from ``connector.announced`` and
``connector.approved`` in the log, and each ``context.ready`` names the hash of every offered
connector tool the agent's charter lists; a rug pull drops the tool from it, an operator's
approval of the new definition brings it back at the new hash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agentos_context_manager.service import NAME, setup
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import unique
from agentos_schemas import EVENTS_STREAM, Event
from agentos_schemas.charter import MemoryPolicy
from agentos_schemas.events import ContextManifest
from agentos_specialist.connectors.ring import ConnectorRing

from tests.context_manager.test_context_manager import announce, arrived, assign, assignment, charter
from tests.specialist.conftest import ring
from tests.specialist.test_hostile import cli, hostile


@pytest.fixture
async def context_manager(settings: KernelSettings) -> AsyncIterator[ServiceContext]:
    ctx = await start_service(NAME, setup, settings)
    yield ctx
    await stop_service(ctx)


@pytest.fixture
async def hostile_ring(bus: Bus, tmp_path: Path) -> AsyncIterator[tuple[ConnectorRing, str, Path]]:
    name = unique("hostile").lower().replace("_", "-")[:30]
    the_ring = ring(bus, hostile(name, tmp_path))
    try:
        yield the_ring, name, tmp_path
    finally:
        await the_ring.close()


@pytest.fixture
async def ready(bus: Bus, tenant: str) -> AsyncIterator[list[Event[Any]]]:
    """Every ``context.ready`` of the test's tenant, as it arrives."""
    got: list[Event[Any]] = []

    async def collect(event: Event[Any]) -> None:
        got.append(event)

    durable = unique("ready")
    consumer = await bus.consumer(durable, [f"agentos.{tenant}.context.ready"], collect, concurrency=1).start()
    yield got
    await consumer.stop()
    await bus.js.delete_consumer(EVENTS_STREAM, durable)


async def seen_by(bus: Bus, tenant: str, got: list[Event[Any]], tools: tuple[str, ...]) -> ContextManifest:
    """The manifest of one task of a newly announced agent listing ``tools``: the context-manager
    learns the agent after every connector event published before it (one follower, log order)."""
    agent = unique("reader").lower().replace("_", "-")
    await announce(bus, tenant, charter(agent, tools=tools, memory=MemoryPolicy(kinds=(), k=0)))
    await assign(bus, tenant, assignment(unique("g"), agent=agent))
    await arrived(got, len(got) + 1)
    (manifest,) = [e.data.manifest for e in got if e.data.agent == agent]
    return manifest


async def test_the_manifest_names_each_offered_tools_pinned_hash_and_follows_an_approval(
    bus: Bus,
    settings: KernelSettings,
    context_manager: ServiceContext,
    hostile_ring: tuple[ConnectorRing, str, Path],
    ready: list[Event[Any]],
    tenant: str,
    tmp_path: Path,
) -> None:
    the_ring, name, state = hostile_ring
    await the_ring.prepare((f"{name}.*", "search_documents"))  # what a specialist does at start
    first = (await the_ring.resolve((f"{name}.greet",)))[f"{name}.greet"].classified.definition_hash
    manifest = await seen_by(bus, tenant, ready, (f"{name}.*", "search_documents"))
    assert manifest.tool_definitions[f"{name}.greet"] == first
    assert f"{name}.lookup" not in manifest.tool_definitions, "a quarantined tool was not offered, so not seen"
    assert "search_documents" not in manifest.tool_definitions, "built-ins have no server definition"
    only = await seen_by(bus, tenant, ready, (f"{name}.greet",))
    assert only.tool_definitions == {f"{name}.greet": first}

    (state / "rugpull").touch()
    await the_ring.server(name).stop()  # the server is upgraded: its next listing changes greet
    assert await the_ring.resolve((f"{name}.greet",)) == {}
    manifest = await seen_by(bus, tenant, ready, (f"{name}.greet",))
    assert manifest.tool_definitions == {}, "quarantined after the rug pull: not offered, not seen"

    approved = await cli(settings, the_ring.connectors[name], tmp_path, "connectors", "approve", f"{name}.greet")
    assert approved.exit_code == 0, approved.output
    manifest = await seen_by(bus, tenant, ready, (f"{name}.greet",))
    again = (await the_ring.resolve((f"{name}.greet",)))[f"{name}.greet"].classified.definition_hash
    assert manifest.tool_definitions == {f"{name}.greet": again} and again != first
