"""The audit service answers ``agentosrpc.audit.query`` and ``agentosrpc.audit.trace`` over NATS:
the CLI's filters, bounded pages with a keyset cursor, the causal tree, and clear refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from agentos_audit.rpc import AuditRPC, encode_cursor
from agentos_audit.settings import AuditSettings
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import eventually, unique
from agentos_schemas import rpc as r
from agentos_schemas.events import GoalSubmitted, TaskAssigned, TaskCompleted

from tests.gateway.conftest import running_audit


@pytest.fixture(scope="module")
async def audit_service(
    settings: KernelSettings, pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceContext]:
    async with running_audit(settings, pool, tmp_path_factory.mktemp("audit-rpc")) as ctx:
        yield ctx


async def query(bus: Bus, **fields: Any) -> r.AuditQueryReply:
    return await bus.request(r.AUDIT_QUERY, r.AuditQuery(**fields), r.AuditQueryReply, timeout=15)


async def seed(bus: Bus, tenant: str, tasks: int = 3) -> tuple[str, list[str]]:
    """A goal fanning out to ``tasks`` tasks, each assigned then completed; ids in publish order."""
    goal = unique("goal")
    submitted = bus.new(
        GoalSubmitted(goal_id=goal, text="Count the stores"), tenant=tenant, correlationid=goal, id=goal
    )
    events = [submitted]
    for n in range(tasks):
        task = f"{goal}/t{n}"
        assigned = bus.new(
            TaskAssigned(
                task_id=task,
                goal_id=goal,
                step_id=f"s{n}",
                attempt=1,
                agent=f"counter{n}",
                capability="count",
                instruction="count",
                goal_text="Count",
            ),
            cause=submitted,
        )
        done = bus.new(
            TaskCompleted(task_id=task, goal_id=goal, step_id=f"s{n}", agent=f"counter{n}", output={"stores": n}),
            cause=assigned,
        )
        events += [assigned, done]
    for event in events:
        await bus.publish(event)
    return goal, [e.id for e in events]


async def projected(bus: Bus, goal: str, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    async def all_there() -> bool:
        reply = await query(bus, goal=goal, limit=100)
        rows[:] = reply.rows
        return len(rows) == n

    await eventually(all_there, timeout=90, every=0.5)
    return rows


async def test_query_filters_and_pages(bus: Bus, audit_service: ServiceContext, tenant: str) -> None:
    goal, ids = await seed(bus, tenant)
    rows = await projected(bus, goal, len(ids))
    assert [x["id"] for x in rows] == list(reversed(ids)), "newest first"
    assert {"seq", "time", "tenant", "type", "agent", "goal_id", "task_id", "tags", "principal"} <= set(rows[0])

    only = await query(bus, tenant=tenant, agent="counter1", type="task.completed", since="1h")
    assert only.code == "ok" and [x["id"] for x in only.rows] == [ids[4]]
    full_type = await query(bus, goal=goal, type="dev.agentos.task.assigned.v1")
    assert [x["id"] for x in full_type.rows] == [ids[5], ids[3], ids[1]]
    assert (await query(bus, goal=goal, tenant=unique("nobody"))).rows == ()

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = await query(bus, goal=goal, limit=2, cursor=cursor)
        assert page.code == "ok" and len(page.rows) <= 2
        seen += [x["id"] for x in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids)), "pages neither overlap nor skip"


async def test_bad_requests_are_refused_with_a_reason(bus: Bus, audit_service: ServiceContext) -> None:
    for fields, needle in [
        ({"since": "last tuesday"}, "last tuesday"),
        ({"type": "no.such"}, "no.such"),
        ({"cursor": "!!"}, "cursor"),
        ({"since": "1h", "until": "2h"}, "before"),
    ]:
        reply = await query(bus, **fields)
        assert reply.code == "invalid" and reply.error and needle in reply.error, (fields, reply)
    raw = await bus.nc.request(r.AUDIT_QUERY, b'{"limit": 0}', timeout=15)
    refused = r.AuditQueryReply.model_validate_json(raw.data)
    assert refused.code == "invalid" and "limit" in (refused.error or "")
    unknown = await bus.nc.request(r.AUDIT_TRACE, b'{"goal_id": "g", "extra": 1}', timeout=15)
    assert r.AuditTraceReply.model_validate_json(unknown.data).code == "invalid"


async def test_trace_is_the_causal_tree(bus: Bus, audit_service: ServiceContext, tenant: str) -> None:
    goal, ids = await seed(bus, tenant, tasks=2)
    await projected(bus, goal, len(ids))
    reply = await bus.request(r.AUDIT_TRACE, r.AuditTrace(goal_id=goal), r.AuditTraceReply, timeout=15)
    assert reply.code == "ok" and not reply.truncated
    by_id = {e.id: e for e in reply.events}
    assert reply.roots == (goal,) and [e.id for e in reply.events] == ids
    assert set(by_id[goal].children) == {ids[1], ids[3]}
    assert by_id[ids[2]].parent_id == ids[1] and by_id[ids[1]].children == (ids[2],)
    assert [(t.task_id, t.agent, t.outcome) for t in reply.tasks] == [
        (f"{goal}/t0", "counter0", "completed"),
        (f"{goal}/t1", "counter1", "completed"),
    ]
    cut = await bus.request(r.AUDIT_TRACE, r.AuditTrace(goal_id=goal, max_events=3), r.AuditTraceReply, timeout=15)
    assert cut.truncated and [e.id for e in cut.events] == ids[:3]
    missing = await bus.request(r.AUDIT_TRACE, r.AuditTrace(goal_id=unique("g")), r.AuditTraceReply, timeout=15)
    assert missing.code == "not_found" and "no events of goal" in (missing.error or "")
    other = await bus.request(
        r.AUDIT_TRACE, r.AuditTrace(goal_id=goal, tenant=unique("nobody")), r.AuditTraceReply, timeout=15
    )
    assert other.code == "not_found"


async def test_answers_fit_in_one_message_and_run_concurrently(
    bus: Bus, pool: asyncpg.Pool, audit_service: ServiceContext, tenant: str
) -> None:
    goal, ids = await seed(bus, tenant, tasks=4)
    await projected(bus, goal, len(ids))
    small = AuditRPC(pool, AuditSettings().schema_name, max_bytes=1500)
    page = await small.query(r.AuditQuery(goal=goal, limit=100))
    assert 0 < len(page.rows) < len(ids) and len(page.model_dump_json()) <= 1500
    last = page.rows[-1]
    assert page.next_cursor == encode_cursor({"time": dt.datetime.fromisoformat(last["time"]), "seq": last["seq"]})
    rest = await small.query(r.AuditQuery(goal=goal, limit=100, cursor=page.next_cursor))
    combined = [x["id"] for x in page.rows] + [x["id"] for x in rest.rows]
    assert rest.rows and combined == list(reversed(ids))[: len(combined)], "the next page starts where it was cut"
    trace = await small.trace(r.AuditTrace(goal_id=goal))
    assert trace.truncated and len(trace.model_dump_json()) <= 1500 and trace.events[0].id == goal

    answers = await asyncio.gather(*(query(bus, goal=goal) for _ in range(12)))
    assert all(len(a.rows) == len(ids) for a in answers)
