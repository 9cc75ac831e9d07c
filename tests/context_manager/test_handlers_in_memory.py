"""The context-manager's handler on the in-memory bus (the unit layer: no server, milliseconds):
an assignment becomes one ``context.ready`` with what went in recorded; memory comes from the
memory service's request/reply, and its absence is a note, not a failure; an assignment for an
agent not yet announced is retried; a redelivered assignment is published once."""

from __future__ import annotations

from typing import Any

import pytest
from agentos_context_manager.service import ContextManager
from agentos_kernel.exceptions import Retry
from agentos_kernel.membus import MemoryBus, service_context
from agentos_schemas import Event, derived_event_id
from agentos_schemas.charter import MemoryPolicy
from agentos_schemas.events import AgentAnnounced, ContextReady, TaskAssigned
from agentos_schemas.events.connectors import ConnectorAnnounced, ConnectorApproved, ToolDefinition
from agentos_schemas.rpc import MEMORY_SEARCH, MemoryEntry, MemorySearch, MemorySearchResult

from tests.context_manager.test_context_manager import assignment, charter

TENANT = "acme"


def manager(*, with_memory: bool) -> tuple[ContextManager, MemoryBus, list[MemorySearch]]:
    bus = MemoryBus(source="context-manager")
    asked: list[MemorySearch] = []

    async def search(request: MemorySearch) -> MemorySearchResult:
        asked.append(request)
        return MemorySearchResult(entries=(MemoryEntry(id="m1", kind="semantic", content="ACME sells CRM", score=0.9),))

    if with_memory:
        bus.serve(MEMORY_SEARCH, MemorySearch, search)
    cm = ContextManager(service_context("context-manager", bus))
    c = charter(memory=MemoryPolicy(kinds=("semantic",), k=3))
    announced = AgentAnnounced(agent=c.name, version=c.version, capabilities=c.capabilities, instance="i1", charter=c)
    cm.learn(bus.new(announced, tenant=TENANT))
    return cm, bus, asked


def assigned(bus: MemoryBus, **overrides: Any) -> Event[TaskAssigned]:
    return bus.new(assignment("g1", **overrides), tenant=TENANT)


async def test_an_assignment_becomes_one_context_with_its_manifest() -> None:
    cm, bus, asked = manager(with_memory=True)
    event = assigned(bus)
    await cm.handle(event)
    (ready,) = bus.published(ContextReady)
    assert ready.id == derived_event_id(event.data.task_id, "context") and ready.causationid == event.id
    data: ContextReady = ready.data
    assert data.manifest.memory_ids == ("m1",) and data.manifest.handoff_sources == ("s1",)
    assert data.manifest.charter.startswith("researcher@")
    assert any("ACME sells CRM" in m["content"] for m in data.messages)
    assert [a.tenant for a in asked] == [TENANT] and asked[0].k == 3


async def test_no_memory_service_is_a_note_not_a_failure() -> None:
    cm, bus, _ = manager(with_memory=False)
    await cm.handle(assigned(bus))
    (ready,) = bus.published(ContextReady)
    assert ready.data.manifest.memory_ids == ()
    assert ready.data.manifest.trimmed == ("memory: unavailable",)


async def test_an_agent_not_yet_announced_is_retried_and_a_redelivery_published_once() -> None:
    cm, bus, _ = manager(with_memory=True)
    with pytest.raises(Retry, match="not announced yet"):
        await cm.handle(assigned(bus, agent="writer"))
    assert cm.ctx.status["awaiting_agents"] == [f"{TENANT}/writer"]
    event = assigned(bus)
    await cm.handle(event)
    await cm.handle(event)  # redelivered
    assert len(bus.published(ContextReady)) == 1 and cm.ctx.status["duplicates"] == 1


async def test_the_manifest_names_the_pinned_hash_of_each_offered_connector_tool() -> None:
    cm, bus, _ = manager(with_memory=True)
    greet = ToolDefinition(name="time.greet", definition_hash="sha256:a", state="offered", pinned_hash="sha256:a")
    moved = ToolDefinition(name="time.moved", definition_hash="sha256:c", state="quarantined", pinned_hash="sha256:b")
    tools = (greet, moved)
    listing = ConnectorAnnounced(connector="time", instance="s1", transport="stdio", listing_hash="x", tools=tools)
    cm.learn(bus.new(listing, tenant="default"))
    c = charter(tools=("time.*", "search_documents"), memory=MemoryPolicy(kinds=("semantic",), k=3))
    cm.learn(
        bus.new(
            AgentAnnounced(agent=c.name, version="2", capabilities=c.capabilities, instance="i", charter=c),
            tenant=TENANT,
        )
    )
    await cm.handle(assigned(bus))
    assert bus.published(ContextReady)[-1].data.manifest.tool_definitions == {"time.greet": "sha256:a"}
    approval = ConnectorApproved(connector="time", tool="time.moved", definition_hash="sha256:c", approved_by="ana")
    cm.learn(bus.new(approval, tenant="default"))
    await cm.handle(assigned(bus, task_id="g1/1/s2/2"))
    seen = bus.published(ContextReady)[-1].data.manifest.tool_definitions
    assert seen == {"time.greet": "sha256:a", "time.moved": "sha256:c"}
