"""The context-manager against a real JetStream, with a fake memory service on request/reply."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from agentos_context_manager import restore
from agentos_context_manager.service import NAME, count, setup
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import eventually, unique
from agentos_schemas import EVENTS_STREAM, Event, derived_event_id
from agentos_schemas.charter import Charter, MemoryPolicy
from agentos_schemas.events import AgentAnnounced, ContextReady, TaskAssigned
from agentos_schemas.rpc import MEMORY_SEARCH, MemoryEntry, MemorySearch, MemorySearchResult


class FakeMemory:
    """Answers ``memory.search`` with whatever ``answer`` returns, and records each request."""

    def __init__(self) -> None:
        self.requests: list[MemorySearch] = []
        self.answer: Callable[[MemorySearch], MemorySearchResult] = lambda _: MemorySearchResult()

    async def handle(self, request: MemorySearch) -> MemorySearchResult:
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
async def service(settings: KernelSettings) -> AsyncIterator[ServiceContext]:
    ctx = await start_service(NAME, setup, settings)
    yield ctx
    await stop_service(ctx)


@pytest.fixture
async def memory(bus: Bus) -> AsyncIterator[FakeMemory]:
    fake = FakeMemory()
    sub = await bus.serve(
        MEMORY_SEARCH, MemorySearch, fake.handle, queue=unique("mem"), error_reply=lambda e: MemorySearchResult(error=e)
    )
    yield fake
    await sub.unsubscribe()


@pytest.fixture
async def ready(bus: Bus, tenant: str) -> AsyncIterator[list[Event[Any]]]:
    """Every ``context.ready`` event of the test's tenant, as it arrives."""
    got: list[Event[Any]] = []

    async def collect(event: Event[Any]) -> None:
        got.append(event)

    durable = unique("ready")
    subject = f"agentos.{tenant}.context.ready"
    consumer = await bus.consumer(durable, [subject], collect, concurrency=1).start()
    yield got
    await consumer.stop()
    await bus.js.delete_consumer(EVENTS_STREAM, durable)


def charter(name: str = "researcher", **overrides: Any) -> Charter:
    fields: dict[str, Any] = {
        "name": name,
        "role": f"The {name}",
        "capabilities": ("research",),
        "model": "offline-fast",
        "tools": ("web_search",),
        "instructions": f"Instructions of {name}.",
    }
    return Charter(**{**fields, **overrides})


async def announce(bus: Bus, tenant: str, c: Charter) -> None:
    data = AgentAnnounced(agent=c.name, version=c.version, capabilities=c.capabilities, instance=unique("i"), charter=c)
    await bus.publish(bus.new(data, tenant=tenant))


def assignment(goal: str, step: str = "s2", agent: str = "researcher", **overrides: Any) -> TaskAssigned:
    fields: dict[str, Any] = {
        "task_id": f"{goal}/1/{step}/1",
        "goal_id": goal,
        "step_id": step,
        "attempt": 1,
        "agent": agent,
        "capability": "research",
        "instruction": "Compare the vendors",
        "goal_text": f"Goal {goal}",
        "depends_on": ("s1",),
        "handoff": {"s1": {"vendors": ["acme"]}},
    }
    return TaskAssigned(**{**fields, **overrides})


async def assign(bus: Bus, tenant: str, task: TaskAssigned) -> Event[Any]:
    event = bus.new(task, tenant=tenant)
    await bus.publish(event)
    return event


async def arrived(got: list[Event[Any]], n: int) -> None:
    async def enough() -> bool:
        return len(got) >= n

    await eventually(enough, timeout=15)


def by_task(got: list[Event[Any]]) -> dict[str, ContextReady]:
    return {e.data.task_id: e.data for e in got}


async def stored(bus: Bus, subject: str) -> int:
    info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_the_manifest_records_exactly_what_went_in(
    service: ServiceContext, memory: FakeMemory, ready: list[Event[Any]], bus: Bus, tenant: str
) -> None:
    await announce(bus, tenant, charter(memory=MemoryPolicy(kinds=("working", "semantic"), k=3)))
    await announce(bus, tenant, charter("mailer", tools=("send_email",)))
    memory.answer = lambda r: MemorySearchResult(
        entries=(
            MemoryEntry(id="m-sem", kind="semantic", content="ACME sells CRM", score=0.4),
            MemoryEntry(id="m-work", kind="working", content="s1 found one vendor", score=0.8, goal_id=r.goal_id),
        )
    )
    handoff = {"s1": {"vendors": ["acme"]}, "s0": {"x": "old"}}
    task = assignment(unique("g"), depends_on=("s1",), handoff=handoff)
    event = await assign(bus, tenant, task)
    await arrived(ready, 1)
    got, ctx_ready = ready[0], ready[0].data
    assert got.id == derived_event_id(task.task_id, "context") and got.causationid == event.id
    [request] = [r for r in memory.requests if r.tenant == tenant]
    assert request.goal_id == task.goal_id and request.kinds == ("working", "semantic") and request.k == 3
    assert "Compare the vendors" in request.query and task.goal_text in request.query
    manifest = ctx_ready.manifest
    assert manifest.memory_ids == ("m-work", "m-sem") and manifest.handoff_sources == ("s1",)
    assert manifest.tools == ("web_search",) and manifest.charter == "researcher@1"
    system, user = (m["content"] for m in ctx_ready.messages)
    assert re.search(r"^agent: researcher$", system, re.MULTILINE)
    assert "web_search" in system and "send_email" not in system and '"old"' not in user
    assert manifest.tokens["total"] == sum(v for k, v in manifest.tokens.items() if k != "total")
    assert manifest.tokens["system"] == count(system) and manifest.tokens["total"] <= manifest.budget_tokens


async def test_two_goals_in_flight_never_see_each_others_work(
    service: ServiceContext, memory: FakeMemory, ready: list[Event[Any]], bus: Bus, tenant: str
) -> None:
    other_tenant = unique("t")
    await announce(bus, other_tenant, charter(instructions="OTHER-TENANT-RULES"))
    await announce(bus, tenant, charter())
    goals = {unique("g"): "SECRET-ALPHA-1234", unique("g"): "SECRET-BRAVO-5678"}
    # A misbehaving memory service: it also returns the other goal's working memory.
    memory.answer = lambda r: MemorySearchResult(
        entries=tuple(
            MemoryEntry(id=f"w-{g}", kind="working", content=f"note {secret}m", score=0.5, goal_id=g)
            for g, secret in goals.items()
        )
    )
    for goal, secret in goals.items():
        await assign(bus, tenant, assignment(goal, handoff={"s1": {"finding": secret}}))
    await arrived(ready, 2)
    contexts = {c.goal_id: c for c in by_task(ready).values()}
    for goal, secret in goals.items():
        seen = json.dumps([contexts[goal].messages, contexts[goal].manifest.model_dump()])
        assert secret in seen and "OTHER-TENANT-RULES" not in seen
        for other, other_secret in goals.items():
            if other != goal:
                assert other_secret not in seen and other not in seen
        assert contexts[goal].manifest.memory_ids == (f"w-{goal}",)
    assert {r.goal_id for r in memory.requests if r.tenant == tenant} == set(goals)


async def test_over_budget_memory_is_dropped_lowest_score_first(
    service: ServiceContext, memory: FakeMemory, ready: list[Event[Any]], bus: Bus, tenant: str
) -> None:
    await announce(bus, tenant, charter(context_tokens=400, memory=MemoryPolicy(k=5)))
    memory.answer = lambda r: MemorySearchResult(
        entries=tuple(
            MemoryEntry(id=f"m{score}", kind="semantic", content="detail " * 60, score=score / 10)
            for score in (3, 9, 1, 7, 5)
        )
    )
    await assign(bus, tenant, assignment(unique("g")))
    await arrived(ready, 1)
    manifest = ready[0].data.manifest
    kept = manifest.memory_ids
    assert 0 < len(kept) < 5 and kept == ("m9", "m7", "m5", "m3", "m1")[: len(kept)]
    dropped = [t for t in manifest.trimmed if t.startswith("memory:")]
    assert dropped == [f"memory:m{s}" for s in (1, 3, 5, 7, 9)][: 5 - len(kept)]
    assert manifest.tokens["total"] <= 400


async def test_a_task_for_an_unknown_agent_waits_for_its_announcement(
    service: ServiceContext, memory: FakeMemory, ready: list[Event[Any]], bus: Bus, tenant: str
) -> None:
    await assign(bus, tenant, assignment(unique("g"), agent="latecomer"))

    async def retried() -> bool:
        return f"{tenant}/latecomer" in service.status["awaiting_agents"]

    await eventually(retried, timeout=10)
    assert ready == []
    await announce(bus, tenant, charter("latecomer", memory=MemoryPolicy(k=0)))
    await arrived(ready, 1)
    assert ready[0].data.agent == "latecomer"
    assert f"{tenant}/latecomer" not in service.status["awaiting_agents"]
    assert [r for r in memory.requests if r.tenant == tenant] == [], "k=0: memory is not asked"


async def test_the_context_is_produced_when_memory_is_down_or_failing(
    service: ServiceContext, ready: list[Event[Any]], bus: Bus, tenant: str
) -> None:
    await announce(bus, tenant, charter())
    await assign(bus, tenant, assignment(unique("g")))
    await arrived(ready, 1)
    assert ready[0].data.manifest.trimmed == ("memory: unavailable",)
    assert ready[0].data.manifest.memory_ids == ()

    async def broken(_: MemorySearch) -> MemorySearchResult:
        raise RuntimeError("index offline")

    sub = await bus.serve(
        MEMORY_SEARCH, MemorySearch, broken, queue=unique("mem"), error_reply=lambda e: MemorySearchResult(error=e)
    )
    try:
        await assign(bus, tenant, assignment(unique("g")))
        await arrived(ready, 2)
    finally:
        await sub.unsubscribe()
    assert ready[1].data.manifest.trimmed == ("memory: unavailable (RuntimeError: index offline)",)


async def test_a_redelivered_assignment_yields_one_context(
    service: ServiceContext, ready: list[Event[Any]], bus: Bus, tenant: str
) -> None:
    await announce(bus, tenant, charter(memory=MemoryPolicy(k=0)))
    task = assignment(unique("g"))
    first = await assign(bus, tenant, task)
    await arrived(ready, 1)
    before = service.status["duplicates"]
    again = await assign(bus, tenant, task)  # same payload, new event id: both are stored and handled
    assert again.id != first.id

    async def handled_twice() -> bool:
        return bool(service.status["duplicates"] > before)

    await eventually(handled_twice, timeout=10)
    assert await stored(bus, f"agentos.{tenant}.task.assigned") == 2
    assert await stored(bus, f"agentos.{tenant}.context.ready") == 1


async def test_restore_reads_the_context_back_from_the_log(
    service: ServiceContext, ready: list[Event[Any]], bus: Bus, tenant: str
) -> None:
    await announce(bus, tenant, charter(context_tokens=200_000, memory=MemoryPolicy(k=0)))
    big = {"transcript": " ".join(f"line {i} of the interview" for i in range(12_000))}
    task = assignment(unique("g"), handoff={"s1": big})
    await assign(bus, tenant, task)
    await arrived(ready, 1)
    assert ready[0].datahash is not None, "over 64 KiB: the payload went by claim check"
    restored = await restore(bus, task.task_id, tenant=tenant)
    assert restored == ready[0].data and restored.manifest.trimmed == ()
    assert big["transcript"] in restored.messages[1]["content"]
    assert await restore(bus, f"{task.task_id}-missing", tenant=tenant) is None


async def test_every_replica_learns_every_agent_announced_after_it_started(
    settings: KernelSettings, bus: Bus, tenant: str
) -> None:
    replicas = [await start_service(NAME, setup, settings) for _ in range(2)]
    try:
        registries = [c.consumers[0].handler.__self__.registry for c in replicas]
        names = [f"agent{i}" for i in range(6)]
        for name in names:
            await announce(bus, tenant, charter(name))

        async def all_learnt() -> bool:
            return all(r.get(tenant, n) is not None for r in registries for n in names)

        await eventually(all_learnt, timeout=10)
    finally:
        for ctx in replicas:
            await stop_service(ctx)
