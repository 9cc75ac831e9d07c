"""Real services treat the CloudEvent id as the event's identity (real NATS JetStream, real
Postgres): a message without ``Nats-Msg-Id`` that reuses an event id with another body is
dead-lettered (``event_id_reused``) by the context-manager and by the memory service alike, and
an identical copy is skipped by both; neither acts on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from agentos_context_manager.service import NAME as CONTEXT_MANAGER
from agentos_context_manager.service import setup as context_setup
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import eventually, unique
from agentos_memory.service import DURABLE as MEMORY
from agentos_memory.service import setup as memory_setup
from agentos_schemas import DLQ_STREAM, EVENTS_STREAM, Event
from agentos_schemas.events import MemoryProposed
from agentos_schemas.rpc import MEMORY_SEARCH, MemorySearch, MemorySearchResult

from tests.context_manager.test_context_manager import announce, assignment, charter
from tests.kernel.test_event_identity import publish_without_msg_id


async def reused_letters(bus: Bus, durable: str, event_id: str) -> list[Any]:
    """Dead letters of ``durable`` that name ``event_id`` as reused."""
    last = (await bus.js.stream_info(DLQ_STREAM)).state.last_seq
    found = []
    for seq in range(max(1, last - 200), last + 1):
        msg = await bus.js.get_msg(DLQ_STREAM, seq)
        headers = msg.headers or {}
        if (
            msg.subject == f"dlq.agentos.{durable}"
            and headers.get("AgentOS-DLQ-Code") == "event_id_reused"
            and event_id in headers.get("AgentOS-DLQ-Reason", "")
        ):
            found.append(msg)
    return found


async def stored(bus: Bus, subject: str) -> int:
    info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


@pytest.fixture
async def context_manager(settings: KernelSettings, bus: Bus) -> AsyncIterator[ServiceContext]:
    sub = await bus.serve(
        MEMORY_SEARCH,
        MemorySearch,
        lambda _: _no_memories(),
        queue=unique("mem"),
        error_reply=lambda e: MemorySearchResult(error=e),
    )
    ctx = await start_service(CONTEXT_MANAGER, context_setup, settings)
    yield ctx
    await stop_service(ctx)
    await sub.unsubscribe()


async def _no_memories() -> MemorySearchResult:
    return MemorySearchResult()


async def test_the_context_manager_assembles_one_context_per_event_id(
    context_manager: ServiceContext, bus: Bus, tenant: str
) -> None:
    await announce(bus, tenant, charter())
    first = bus.new(assignment(unique("g")), tenant=tenant)
    await bus.publish(first)
    ready = f"agentos.{tenant}.context.ready"

    async def one_context() -> bool:
        return await stored(bus, ready) == 1

    await eventually(one_context)
    await publish_without_msg_id(bus, first)  # an identical copy: skipped
    other = bus.new(assignment(unique("g")), tenant=tenant, id=first.id)  # another task, same id
    await publish_without_msg_id(bus, other)

    async def refused() -> bool:
        return len(await reused_letters(bus, CONTEXT_MANAGER, first.id)) == 1

    await eventually(refused)
    assert await stored(bus, ready) == 1, "the task behind the reused id got no context"
    assert sum(c.copies for c in context_manager.consumers) >= 1


@pytest.fixture
async def memory(settings: KernelSettings) -> AsyncIterator[ServiceContext]:
    ctx = await start_service("memory", memory_setup, settings, database=True)
    yield ctx
    await stop_service(ctx)


def proposal(entry_id: str, content: str) -> MemoryProposed:
    return MemoryProposed(
        entry_id=entry_id,
        kind="episodic",
        content=content,
        tags=("market",),
        agent="researcher",
        goal_id="g1",
        task_id="g1/1/research/1",
        step_id="research",
    )


async def test_the_memory_service_stores_one_proposal_per_event_id(
    memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str
) -> None:
    kept, smuggled = unique("e"), unique("e")
    first: Event[Any] = bus.new(proposal(kept, "Acme raised prices by 12 percent"), tenant=tenant)
    await bus.publish(first)

    async def proposed() -> bool:
        return await pool.fetchval("SELECT status FROM memory.entries WHERE id = $1", kept) == "proposed"

    await eventually(proposed)
    await publish_without_msg_id(bus, first)
    other = bus.new(proposal(smuggled, "Acme is going bankrupt"), tenant=tenant, id=first.id)
    await publish_without_msg_id(bus, other)

    async def refused() -> bool:
        return len(await reused_letters(bus, MEMORY, first.id)) == 1

    await eventually(refused)
    assert await pool.fetchval("SELECT count(*) FROM memory.entries WHERE id = $1", smuggled) == 0
    assert sum(c.copies for c in memory.consumers) >= 1
