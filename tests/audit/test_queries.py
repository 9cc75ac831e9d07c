"""The analysts' questions answered on a seeded workload with known answers; views, the read-only role,
the causal trace and the exports."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pyarrow.parquet as pq
import pytest
from agentos_audit import export, queries, render
from agentos_audit.projector import Projector
from agentos_audit.trace import build_tree, task_summaries
from agentos_kernel import Bus
from agentos_kernel.testing import unique
from agentos_schemas import Event
from rich.console import Console

from tests.audit.conftest import caught_up, publish_all
from tests.audit.workload import EXPECTED_COST, TRACE_ID, Workload, build


@pytest.fixture
async def seeded(bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str) -> AsyncIterator[Workload]:
    w = build(bus, tenant, unique("g"))
    other = build(bus, unique("t"), unique("g"))  # another tenant's goal: filters must leave it out
    await publish_all(bus, w.events + other.events)
    await caught_up(bus, pool, audit.schema)
    yield w


async def ids(pool: asyncpg.Pool, schema: str, **filters: object) -> set[str]:
    rows = await queries.query_events(pool, schema, queries.Filters(**filters))  # type: ignore[arg-type]
    return {r["id"] for r in rows}


def agent_of(e: Event[Any]) -> str | None:
    return getattr(e.data, "agent", None) or getattr(getattr(e.data, "request", None), "agent", None)


def of(w: Workload, *names: str) -> set[str]:
    return {e.id for n in names for e in w.of(n)}


async def test_query_filters(pool: asyncpg.Pool, audit: Projector, seeded: Workload) -> None:
    s, t = audit.schema, seeded.tenant
    research = {e.id for e in seeded.events if agent_of(e) == "research"}
    assert await ids(pool, s, tenant=t, agent="research") == research and len(research) == 5
    assert await ids(pool, s, tenant=t, tool="send_email") == {seeded.of("policy.decided")[1].id}
    assert await ids(pool, s, tenant=t, type="task.completed") == of(seeded, "task.completed")
    assert await ids(pool, s, tenant=t, model="backup") == {seeded.of("task.completed")[0].id}
    assert await ids(pool, s, tenant=t, tool="web_search") == {seeded.of("context.ready")[0].id}
    personal = {seeded.of("goal.submitted")[0].id, seeded.of("context.ready")[0].id}
    assert await ids(pool, s, tenant=t, tag="personal_data") == personal
    assert await ids(pool, s, goal=seeded.goal_id) == {e.id for e in seeded.events}
    assert await ids(pool, s, tenant=t, since=queries.parse_when("1h")) == {e.id for e in seeded.events}
    assert await ids(pool, s, tenant=t, until=queries.parse_when("1h")) == set()
    assert len(await ids(pool, s, tenant=t, limit=3)) == 3


async def test_risk_officer_questions(pool: asyncpg.Pool, audit: Projector, seeded: Workload) -> None:
    s, t = audit.schema, seeded.tenant
    agents = await queries.personal_data(pool, s, queries.parse_when("7d"), t)
    assert [(a["agent"], a["events"], a["kinds"], a["types"]) for a in agents] == [
        ("research", 1, ["pii:phone", "redacted"], ["context.ready"])
    ]
    denials = await queries.denied(pool, s, None, t)
    assert [(d["kind"], d["agent"], d["resource"], d["reason"]) for d in denials] == [
        ("task.failed", "qa", "", "denied by policy: tool not allowed"),
        ("policy.decided", "writer", "send_email", "send_email is not allowed"),
    ]
    costs = await queries.cost(pool, s, seeded.goal_id, t)
    got = {(c["agent"], c["model"]): (c["calls"], c["tokens"], round(c["cost_usd"], 9)) for c in costs}
    assert got == EXPECTED_COST
    assert costs[0]["agent"] == "research" and costs[0]["model"] == "smart", "most expensive first"
    event = seeded.of("task.completed")[0]
    answer = await queries.allowed_by(pool, s, event.id, t)
    assert answer["kind"] == "event" and answer["rows"][0]["id"] == event.id
    assert [(d["decision"], d["action"], d["resource"], d["policy_version"]) for d in answer["decisions"]] == [
        ("allow", "model_call", "smart", "v7")
    ]
    action = await queries.allowed_by(pool, s, "send_email", t)
    assert [(d["policy_version"], d["decision"], d["decisions"]) for d in action["decisions"]] == [("v7", "deny", 1)]
    assert (await queries.allowed_by(pool, s, "nothing-like-it", t))["decisions"] == []


async def test_views_and_the_read_only_analyst_role(pool: asyncpg.Pool, audit: Projector, seeded: Workload) -> None:
    s = audit.schema
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE agentos_analyst")
        done = await conn.fetch(
            f"SELECT step_id, output, usage FROM {s}.v_task_completed WHERE goal_id = $1 ORDER BY seq", seeded.goal_id
        )
        assert [r["step_id"] for r in done] == ["research", "write"]
        calls = await conn.fetch(
            f"SELECT agent, model, input_tokens, cost_usd FROM {s}.v_model_calls WHERE goal_id = $1", seeded.goal_id
        )
        assert len(calls) == 4
        names = await conn.fetchval(
            f"SELECT array_agg(DISTINCT name) FROM {s}.v_events WHERE goal_id = $1", seeded.goal_id
        )
        assert "task.completed" in names and "context.ready" in names
        total = await conn.fetchval(f"SELECT sum(cost_usd) FROM {s}.v_goal_costs WHERE goal_id = $1", seeded.goal_id)
        assert abs(total - 0.036) < 1e-9
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"DELETE FROM {s}.events")


async def test_causal_trace_of_a_goal(pool: asyncpg.Pool, audit: Projector, seeded: Workload) -> None:
    rows = await queries.goal_events(pool, audit.schema, seeded.goal_id, seeded.tenant)
    roots = build_tree(rows)
    assert len(roots) == 1 and roots[0].row["id"] == seeded.events[0].id
    depth, node = 1, roots[0]
    while node.children:
        depth, node = depth + 1, node.children[0]
    assert depth == len(seeded.events), "each event hangs under its cause"
    research = next(t for t in task_summaries(rows) if t["agent"] == "research")
    assert research["charter"] == "research@2" and research["memory_ids"] == ["m1", "m2"]
    assert research["context_tokens"] == 220 and research["models"] == ["backup", "smart"]
    assert abs(research["cost_usd"] - 0.025) < 1e-12 and research["tokens"] == 1550
    assert research["trace_id"] == TRACE_ID and research["outcome"] == "completed"
    console = Console(file=io.StringIO(), width=200)
    console.print(render.trace_tree(seeded.goal_id, roots))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "charter research@2" in text and "memory 2 entries (semantic 2)" in text and TRACE_ID in text
    assert "deny tool_call send_email by policy v7 (not_allowed: send_email is not allowed)" in text


async def test_exports_jsonl_and_parquet(
    pool: asyncpg.Pool, audit: Projector, seeded: Workload, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    n = await export.write_jsonl(buf, export.records(pool, audit.schema, queries.parse_when("1h"), None, seeded.tenant))
    lines = [msgspec.json.decode(line) for line in buf.getvalue().splitlines()]
    assert n == len(lines) == len(seeded.events)
    assert [r["id"] for r in lines] == [e.id for e in seeded.events]
    assert lines[0]["data"]["goal_id"] == seeded.goal_id and len(lines[0]["chain_hash"]) == 64
    path = tmp_path / "events.parquet"
    assert await export.write_parquet(path, export.records(pool, audit.schema, None, None, seeded.tenant)) == n
    table = pq.read_table(path)
    assert table.num_rows == n and table.column("id").to_pylist() == [e.id for e in seeded.events]
    assert table.column("models").to_pylist()[6] == ["backup", "smart"]
