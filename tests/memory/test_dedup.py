"""Memory writes are idempotent per (goal, agent, content), and a finding already committed is not
stored twice: a duplicate (same text up to case, punctuation and spacing, or nearly the same) is
refused with a reason, kept as a rejected entry that names its twin, and announced on
``memory.committed``. Real NATS JetStream and Postgres; the specialist's own proposal tool."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import eventually
from agentos_memory import logic
from agentos_memory.service import setup
from agentos_schemas.events import ContextManifest, ContextReady, MemoryCommitted
from agentos_specialist.tools import DocumentIndex, ToolContext, build_tools

from tests.memory.test_memory import committed_events, ids_found, send, status_of, verdict

DEDUP = "memory:dedup"
PROPOSE = build_tools(DocumentIndex({}))["propose_memory"].run
FINDING = "Brightline Data charges $45 per user per month (10-seat minimum)."


@pytest.fixture(scope="module")
async def memory(settings: KernelSettings) -> AsyncIterator[ServiceContext]:
    ctx = await start_service("memory", setup, settings, database=True)
    yield ctx
    await stop_service(ctx)


async def propose(bus: Bus, tenant: str, goal: str, attempt: int, content: str) -> str:
    """Propose ``content`` the way the memory-keeper does (the specialist's tool); returns the entry id."""
    data = ContextReady(
        task_id=f"{goal}/r0/store/a{attempt}",
        goal_id=goal,
        agent="memory-keeper",
        step_id="store",
        messages=(),
        manifest=ContextManifest(charter="memory-keeper@1"),
    )
    ctx = ToolContext(bus, bus.new(data, tenant=tenant, correlationid=goal))
    answer = await PROPOSE(ctx, {"content": content})
    return str(json.loads(answer)["proposed"])


async def entry(pool: asyncpg.Pool, entry_id: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        "SELECT status, reviewer, duplicate_of, refusal, task_id FROM memory.entries WHERE id = $1", entry_id
    )
    assert row is not None, f"no entry {entry_id}"
    return dict(row)


async def committed(bus: Bus, tenant: str, goal: str, attempt: int = 1) -> None:
    await send(bus, verdict(f"{goal}/r0/store/a{attempt}", accepted=True, goal_id=goal), tenant)


async def test_a_replayed_proposal_and_a_retried_step_leave_one_entry(
    memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str
) -> None:
    first = await propose(bus, tenant, "g1", 1, FINDING)
    again = await propose(bus, tenant, "g1", 1, FINDING)  # the same proposal replayed
    await eventually(lambda: _status(pool, first, "proposed"))
    await send(bus, verdict("g1/r0/store/a1", accepted=False, goal_id="g1"), tenant)
    await eventually(lambda: _status(pool, first, "rejected"))
    retried = await propose(bus, tenant, "g1", 2, FINDING.upper())  # attempt 2 proposes it again
    assert first == again == retried, "one entry per (goal, agent, content)"
    await eventually(lambda: _status(pool, first, "proposed"))  # taken over by the new attempt
    await committed(bus, tenant, "g1", attempt=2)
    await eventually(lambda: _status(pool, first, "committed"))
    assert (
        await pool.fetchval("SELECT count(*) FROM memory.entries WHERE tenant = $1 AND kind = 'episodic'", tenant) == 1
    )


async def test_the_same_finding_from_a_second_run_is_refused_with_a_reason(
    memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str
) -> None:
    original = await propose(bus, tenant, "run1", 1, FINDING)
    await committed(bus, tenant, "run1")
    await eventually(lambda: _status(pool, original, "committed"))
    same = await propose(bus, tenant, "run2", 1, "  brightline data charges 45 per user, per month: 10 seat minimum ")
    near = await propose(bus, tenant, "run3", 1, FINDING.replace("per user", "per seat"))
    other = await propose(bus, tenant, "run4", 1, "Brightline Data slows down past about 50M rows.")
    for refused in (same, near):
        await eventually(lambda refused=refused: _status(pool, refused, "rejected"))
        row = await entry(pool, refused)
        assert row["reviewer"] == DEDUP and row["duplicate_of"] == original
        assert row["refusal"].startswith(f"duplicate of committed entry {original}")
    assert "(the same text)" in (await entry(pool, same))["refusal"]
    assert "alike)" in (await entry(pool, near))["refusal"]
    await eventually(lambda: _status(pool, other, "proposed"))  # a different finding is not a duplicate
    for goal in ("run2", "run3"):
        await committed(bus, tenant, goal)
    await committed(bus, tenant, "run4")
    await eventually(lambda: _status(pool, other, "committed"))
    assert await status_of(pool, same) == "rejected" and await status_of(pool, near) == "rejected"
    assert await ids_found(bus, tenant, "Brightline charges per month", kinds=("episodic",)) == {original, other}

    async def announced() -> bool:
        refusals = [c for c in await committed_events(bus, tenant) if c.reviewer == DEDUP]
        return sorted(c.entry_ids for c in refusals) == sorted([(same,), (near,)]) and all(
            c.status == "rejected" and original in c.reason for c in refusals
        )

    await eventually(announced)


async def test_two_runs_proposing_the_same_finding_at_once_commit_it_once(
    memory: ServiceContext, bus: Bus, pool: asyncpg.Pool, tenant: str
) -> None:
    a = await propose(bus, tenant, "ra", 1, FINDING)
    b = await propose(bus, tenant, "rb", 1, FINDING)
    await eventually(lambda: _status(pool, a, "proposed"))
    await eventually(lambda: _status(pool, b, "proposed"))  # neither committed yet: both wait for review
    await committed(bus, tenant, "ra")
    await eventually(lambda: _status(pool, a, "committed"))
    await committed(bus, tenant, "rb")
    await eventually(lambda: _status(pool, b, "rejected"))
    assert (await entry(pool, b))["duplicate_of"] == a
    events: list[MemoryCommitted] = await committed_events(bus, tenant)
    assert any(c.entry_ids == (b,) and c.reviewer == DEDUP for c in events)


def test_similarity_ignores_case_punctuation_and_spacing() -> None:
    assert logic.similarity(FINDING, "brightline   data charges 45 per user per month 10 seat minimum") == 1.0
    assert logic.similarity(FINDING, FINDING.replace("user", "seat")) >= 0.9
    assert logic.similarity(FINDING, "Cobalt Metrics prices by usage.") < 0.5
    assert logic.duplicate(FINDING, [("x", "Cobalt Metrics prices by usage."), ("y", FINDING.lower())], 0.9) == (
        "y",
        "duplicate of committed entry y (the same text)",
    )
    assert logic.duplicate(FINDING, [("x", "Cobalt Metrics prices by usage.")], 0.9) is None


async def _status(pool: asyncpg.Pool, entry_id: str, expected: str) -> bool:
    return await status_of(pool, entry_id) == expected
