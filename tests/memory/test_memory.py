"""The memory service against real NATS JetStream and Postgres: review gating, working-memory
scoping, curated files, ranking, bad requests and redelivery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from agentos_kernel import Bus, ConfigError, KernelSettings
from agentos_kernel.replay import replay
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import eventually, unique
from agentos_memory import knowledge, logic, store
from agentos_memory.service import MemoryService, setup
from agentos_schemas import Event, EventData
from agentos_schemas.events import (
    MemoryCommitted,
    MemoryProposed,
    MemoryReviewed,
    TaskCompleted,
    TaskReviewed,
)
from agentos_schemas.rpc import MEMORY_SEARCH, MemoryEntry, MemorySearch, MemorySearchResult


@pytest.fixture(scope="module")
async def memory(settings: KernelSettings) -> AsyncIterator[ServiceContext]:
    ctx = await start_service("memory", setup, settings, database=True)
    yield ctx
    await stop_service(ctx)


async def send(bus: Bus, data: EventData, tenant: str) -> Event[Any]:
    event = bus.new(data, tenant=tenant)
    await bus.publish(event)
    return event


async def search(bus: Bus, tenant: str, query: str, **options: Any) -> list[MemoryEntry]:
    result = await bus.request(MEMORY_SEARCH, MemorySearch(tenant=tenant, query=query, **options), MemorySearchResult)
    assert result.error is None, result.error
    return list(result.entries)


async def ids_found(bus: Bus, tenant: str, query: str, **options: Any) -> set[str]:
    return {e.id for e in await search(bus, tenant, query, **options)}


async def status_of(pool: asyncpg.Pool, entry_id: str) -> str | None:
    return await pool.fetchval("SELECT status FROM memory.entries WHERE id = $1", entry_id)


async def committed_events(bus: Bus, tenant: str) -> list[MemoryCommitted]:
    found: list[MemoryCommitted] = []

    def collect(event: Event[Any]) -> None:
        found.append(event.data)

    await replay(bus, [f"agentos.{tenant}.memory.committed"], collect)
    return found


def proposal(entry_id: str, task_id: str, content: str, goal_id: str = "g1") -> MemoryProposed:
    return MemoryProposed(
        entry_id=entry_id,
        kind="episodic",
        content=content,
        tags=("market",),
        agent="researcher",
        goal_id=goal_id,
        task_id=task_id,
        step_id="research",
    )


def verdict(task_id: str, accepted: bool, goal_id: str = "g1") -> TaskReviewed:
    return TaskReviewed(
        goal_id=goal_id,
        step_id="research",
        task_id=task_id,
        verdict="accepted" if accepted else "rejected",
        reviewer="qa",
    )


async def test_proposals_are_invisible_until_qa_accepts_their_task(
    memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str
) -> None:
    good, bad = unique("e"), unique("e")
    sent = await send(bus, proposal(good, "g1/1/research/1", "Brightline Data raised prices by 12 percent"), tenant)
    await send(bus, proposal(bad, "g1/1/research/2", "Brightline Data is going bankrupt next week"), tenant)
    await eventually(lambda: _has_status(pool, {good: "proposed", bad: "proposed"}))
    assert await ids_found(bus, tenant, "Brightline prices", kinds=("episodic",)) == set(), "not yet"

    await send(bus, verdict("g1/1/research/1", accepted=True), tenant)
    await send(bus, verdict("g1/1/research/2", accepted=False), tenant)
    await eventually(lambda: _has_status(pool, {good: "committed", bad: "rejected"}))
    entries = [e for e in await search(bus, tenant, "Brightline prices bankrupt") if e.kind == "episodic"]
    assert [e.id for e in entries] == [good], "only the accepted proposal is visible"
    entry = entries[0]
    assert (entry.agent, entry.goal_id, entry.task_id, entry.event_id) == (
        "researcher",
        "g1",
        "g1/1/research/1",
        sent.id,
    ), "full provenance"
    assert entry.created_at is not None and entry.score > 0

    async def announced() -> bool:
        got = {(tuple(c.entry_ids), c.status, c.reviewer) for c in await committed_events(bus, tenant)}
        return got == {((good,), "committed", "qa"), ((bad,), "rejected", "qa")}

    await eventually(announced)


async def test_a_proposal_arriving_after_its_review_gets_the_verdict(
    memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str
) -> None:
    entry_id = unique("e")
    await send(bus, verdict("g1/1/late/1", accepted=True), tenant)
    await eventually(lambda: _reviewed(pool, tenant, "g1/1/late/1"))
    await send(bus, proposal(entry_id, "g1/1/late/1", "Cobalt Metrics launched a free tier"), tenant)
    await eventually(lambda: _has_status(pool, {entry_id: "committed"}))

    async def announced() -> bool:
        return [c.entry_ids for c in await committed_events(bus, tenant)] == [(entry_id,)]

    await eventually(announced)


async def test_human_review_commits_by_ids(memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str) -> None:
    keep, drop = unique("e"), unique("e")
    await send(bus, proposal(keep, "g1/1/r/1", "Deltaforge BI opened a Berlin office"), tenant)
    await send(bus, proposal(drop, "g1/1/r/1", "Deltaforge BI office rumour from a forum"), tenant)
    await eventually(lambda: _has_status(pool, {keep: "proposed", drop: "proposed"}))
    await send(bus, MemoryReviewed(entry_ids=(keep,), verdict="accepted", reviewer="user:ann"), tenant)
    await send(bus, MemoryReviewed(entry_ids=(drop,), verdict="rejected", reviewer="user:ann"), tenant)
    await eventually(lambda: _has_status(pool, {keep: "committed", drop: "rejected"}))
    assert await ids_found(bus, tenant, "Deltaforge office", kinds=("episodic",)) == {keep}
    reviewer = await pool.fetchval("SELECT reviewer FROM memory.entries WHERE id = $1", keep)
    assert reviewer == "user:ann"


async def test_working_memory_is_scoped_to_its_goal_and_dropped_on_rejection(
    memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str
) -> None:
    goal, other = unique("g"), unique("g")
    task_id = f"{goal}/1/research/1"
    output = {"summary": "Pricing   of Brightline Data\nand Cobalt Metrics", "sources": ["a.com", "b.com"]}
    await send(
        bus, TaskCompleted(task_id=task_id, goal_id=goal, step_id="research", agent="researcher", output=output), tenant
    )
    working_id = logic.working_entry_id(task_id)
    await eventually(lambda: _has_status(pool, {working_id: "committed"}))

    found = await search(bus, tenant, "pricing of Brightline", goal_id=goal, kinds=("working",))
    assert [e.id for e in found] == [working_id]
    assert found[0].content.startswith("Step research by researcher:")
    assert "summary: Pricing of Brightline Data and Cobalt Metrics" in found[0].content
    assert (found[0].goal_id, found[0].task_id, found[0].agent) == (goal, task_id, "researcher")
    assert working_id not in await ids_found(bus, tenant, "pricing Brightline", goal_id=other)
    assert working_id not in await ids_found(bus, tenant, "pricing Brightline")
    assert working_id not in await ids_found(bus, unique("t"), "pricing Brightline", goal_id=goal)

    await send(bus, verdict(task_id, accepted=False, goal_id=goal), tenant)
    await eventually(lambda: _has_status(pool, {working_id: "rejected"}))
    assert working_id not in await ids_found(bus, tenant, "pricing Brightline", goal_id=goal)


async def test_curated_files_are_loaded_and_guide_every_writer(memory: ServiceContext, bus: Bus, tenant: str) -> None:
    found = await search(bus, tenant, "write the final report for the customer")
    tone = [e for e in found if e.source == "tone-guidelines.md"]
    assert tone and tone[0].content.startswith("# Tone guidelines (house style)")
    assert tone[0].kind == "semantic" and "always" in tone[0].tags
    unrelated = await search(bus, tenant, "zebra", kinds=("semantic",))
    assert [e.source for e in unrelated] == ["tone-guidelines.md"], "always-tagged, with a floor score"
    assert unrelated[0].score == logic.ALWAYS_FLOOR
    profile = await search(bus, tenant, "who are our competitors?", kinds=("semantic",))
    assert profile[0].source == "company-profile.md"
    assert "Competitor B: Cobalt Metrics" in profile[0].content
    assert await search(bus, tenant, "competitors", kinds=("episodic",)) == []


async def test_a_changed_curated_file_updates_its_entry(
    settings: KernelSettings, bus: Bus, pool: asyncpg.Pool, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    note = tmp_path / "pricing-policy.md"
    note.write_text(f"---\ntags: [pricing]\ntenant: {tenant}\n---\n# Pricing\nDiscounts need approval.\n")
    monkeypatch.setenv("AGENTOS_KNOWLEDGE_DIR", str(tmp_path))
    ctx = await start_service("memory", setup, settings, database=True)  # a second replica
    try:
        assert [
            e.content
            for e in await search(bus, tenant, "discounts approval", kinds=("semantic",))
            if e.source == note.name
        ] == ["# Pricing\nDiscounts need approval."]
        assert "semantic:pricing-policy.md" not in await ids_found(bus, unique("t"), "discounts approval")
        note.write_text(f"---\ntags: [pricing]\ntenant: {tenant}\n---\n# Pricing\nDiscounts need a VP.\n")
        assert await knowledge.load(pool, tmp_path) == 1
        assert await knowledge.load(pool, tmp_path) == 0, "unchanged files are left alone"
        found = await search(bus, tenant, "discounts", kinds=("semantic",))
        assert [e.content for e in found if e.source == note.name] == ["# Pricing\nDiscounts need a VP."]
    finally:
        await stop_service(ctx)


def test_bad_curated_files_are_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match=r"'a.md'.*YAML"):
        knowledge.parse("a.md", "---\ntags: [unclosed\n---\nbody")
    with pytest.raises(ConfigError, match=r"'b.md'.*never closed"):
        knowledge.parse("b.md", "---\ntags: []\nbody")
    with pytest.raises(ConfigError, match=r"'c.md'.*tenant"):
        knowledge.parse("c.md", "---\ntenant: Not A Token\n---\nbody")
    assert knowledge.parse("d.md", "plain body\n").tenant == "*"


async def test_the_most_relevant_entry_ranks_first(
    memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str
) -> None:
    texts = {
        "best": "Cobalt Metrics pricing: Cobalt Metrics cut its pricing for small teams in 2025",
        "some": "Cobalt Metrics hired a new head of sales",
        "weak": "Quarterly pricing review of office supplies",
        "none": "The weather in Lisbon was sunny",
    }
    ids = {name: unique(name) for name in texts}
    for name, text in texts.items():
        await send(bus, proposal(ids[name], "g1/1/rank/1", text), tenant)
    await eventually(lambda: _has_status(pool, dict.fromkeys(ids.values(), "proposed")))
    accept_all = MemoryReviewed(entry_ids=tuple(ids.values()), verdict="accepted", reviewer="user:bo")
    await send(bus, accept_all, tenant)
    await eventually(lambda: _has_status(pool, dict.fromkeys(ids.values(), "committed")))

    found = await search(bus, tenant, "What is Cobalt Metrics' pricing?", k=5)
    assert found[0].id == ids["best"], "ahead of the company profile and the pinned tone guidelines too"
    found = await search(bus, tenant, "What is Cobalt Metrics' pricing?", k=4, kinds=("episodic",))
    assert found[0].id == ids["best"]
    assert ids["none"] not in {e.id for e in found}
    assert {ids["some"], ids["weak"]} <= {e.id for e in found}
    assert [e.score for e in found] == sorted((e.score for e in found), reverse=True)
    assert len(await search(bus, tenant, "Cobalt pricing", k=1)) == 1


async def test_a_malformed_request_gets_an_error_reply(memory: ServiceContext, bus: Bus) -> None:
    for raw in (b"not json", b'{"query": "no tenant"}', b'{"tenant": "t", "query": "x", "k": 99}'):
        msg = await bus.nc.request(MEMORY_SEARCH, raw, timeout=5)
        reply = MemorySearchResult.model_validate_json(msg.data)
        assert reply.error and reply.error.startswith("invalid request") and reply.entries == ()


async def test_duplicates_and_redeliveries_change_nothing(
    memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str
) -> None:
    entry_id = unique("e")
    await send(bus, proposal(entry_id, "g1/1/dup/1", "Brightline Data won a retail customer"), tenant)
    await send(bus, proposal(entry_id, "g1/1/dup/1", "Brightline Data won a retail customer"), tenant)
    await eventually(lambda: _has_status(pool, {entry_id: "proposed"}))

    service = MemoryService(pool, bus)
    review = bus.new(verdict("g1/1/dup/1", accepted=True), tenant=tenant)
    done = bus.new(
        TaskCompleted(task_id="g1/1/dup/1", goal_id="g1", step_id="dup", agent="a", output={"x": 1}), tenant=tenant
    )
    for event in (review, review, done, done):
        await service.handle(event)  # as if JetStream redelivered each one
    assert await pool.fetchval("SELECT count(*) FROM memory.entries WHERE id = $1", entry_id) == 1
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM memory.entries WHERE task_id = $1 AND tenant = $2", "g1/1/dup/1", tenant
        )
        == 2
    ), "the proposal and one working entry"
    assert await status_of(pool, entry_id) == "committed"
    assert [c.entry_ids for c in await committed_events(bus, tenant)] == [(entry_id,)]


async def test_migrations_can_run_again(pool: asyncpg.Pool) -> None:
    await store.migrate_schema(pool)
    await store.migrate_schema(pool)


def test_working_summary_is_compact_and_bounded() -> None:
    output = {"report": "word " * 5000, "table": [{"a": i} for i in range(500)], "ok": True}
    text = logic.summarize_output(output, 4000)
    assert len(text) <= 4000 and text.endswith("ok: true")
    assert text.startswith("report: word word") and '\ntable: [{"a": 0}' in text
    assert logic.summarize_output({}) == "(empty output)"


async def _has_status(pool: asyncpg.Pool, expected: dict[str, str]) -> bool:
    rows = await pool.fetch("SELECT id, status FROM memory.entries WHERE id = ANY($1::text[])", list(expected))
    return {r["id"]: r["status"] for r in rows} == expected


async def _reviewed(pool: asyncpg.Pool, tenant: str, task_id: str) -> bool:
    return bool(
        await pool.fetchval("SELECT 1 FROM memory.task_reviews WHERE tenant = $1 AND task_id = $2", tenant, task_id)
    )
