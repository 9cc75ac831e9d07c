"""Operator and analyst endpoints over HTTP, against the real policy and audit services: approvals
and the two-person rule, rejection, takeover, kill switches, budgets, audit queries and traces."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from agentos_gateway import hash_key
from agentos_kernel import Bus, control
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import eventually, unique
from agentos_schemas.events import GoalSubmitted, HaltRequested, ResumeRequested, TaskAssigned, TaskCompleted
from agentos_schemas.rpc import PolicyDecision

from tests.gateway.conftest import Running, stored
from tests.policy.conftest import ask

Start = Callable[..., Awaitable[Running]]
PROBLEM = "application/problem+json"
# Per-person keys: each acts as the human of its name (policy: alice, bob approvers; oscar operator;
# ana analyst; carol admin). `ops` is an operator key bound to no tenant; `boss` an admin key.
PEOPLE = {
    "alice": ["operator"],
    "bob": ["operator"],
    "oscar": ["operator"],
    "ana": ["operator"],
    "analyst": ["analyst"],
    "integrator": ["integrator"],
}


def keys(tenant: str) -> list[dict[str, Any]]:
    found = [
        {"name": name, "sha256": hash_key(f"k-{name}-{tenant}"), "roles": roles, "tenant": tenant}
        for name, roles in PEOPLE.items()
    ]
    found.append({"name": "ops", "sha256": hash_key(f"k-ops-{tenant}"), "roles": ["operator"]})
    found.append({"name": "boss", "sha256": hash_key(f"k-boss-{tenant}"), "roles": ["admin"]})
    found.append(
        {
            "name": "elsewhere",
            "sha256": hash_key(f"k-elsewhere-{tenant}"),
            "roles": ["operator"],
            "tenant": unique("other"),
        }
    )
    return found


def as_(gw: Running, name: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer k-{name}-{gw.tenant}"}, timeout=30)


async def operators(start_gateway: Start, tenant: str) -> Running:
    """A gateway with the per-person keys (tenant-bound ones bound to the test's tenant)."""
    return await start_gateway(api_keys=keys(tenant))


def holds(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


def problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    doc: dict[str, Any] = resp.json()
    assert doc["code"] == code and doc["status"] == status, doc
    return doc


async def transfer(bus: Bus, tenant: str, call: str) -> PolicyDecision:
    """A high-risk outside action: two distinct approvers needed."""
    return await ask(
        bus,
        tenant,
        "finance",
        "outside_action",
        "bank:payments",
        tool="transfer_funds",
        goal_id=unique("g"),
        task_id="t",
        call_id=call,
        args={"amount": "100", "to": "ACME"},
    )


async def delete_record(bus: Bus, tenant: str, call: str) -> PolicyDecision:
    """A medium-risk tool call: one approver."""
    return await ask(
        bus,
        tenant,
        "finance",
        "tool_call",
        "delete_record",
        tool="delete_record",
        goal_id="g",
        task_id="t",
        call_id=call,
        args={"id": call},
    )


# -- approvals ---------------------------------------------------------------------------------------


async def test_two_distinct_approvers_and_not_the_same_person_twice(
    bus: Bus, start_gateway: Start, policy_service: ServiceContext, tenant: str
) -> None:
    gw = await operators(start_gateway, tenant)
    first = await transfer(bus, gw.tenant, "c1")
    assert first.decision == "require_approval" and first.risk == "high" and first.approval_id
    aid = first.approval_id
    async with (
        as_(gw, "alice") as alice,
        as_(gw, "bob") as bob,
        as_(gw, "ana") as ana,
        as_(gw, "analyst") as analyst,
        as_(gw, "elsewhere") as elsewhere,
        as_(gw, "boss") as boss,
    ):
        listed = await alice.get("/approvals")
        assert listed.status_code == 200, listed.text
        assert [a["approval_id"] for a in listed.json()["approvals"]] == [aid]
        shown = await analyst.get(f"/approvals/{aid}")
        assert shown.status_code == 200 and shown.json()["state"] == "pending (0 of 2 approvals)"

        one = await alice.post(f"/approvals/{aid}/approve", json={"reason": "checked the invoice"})
        assert one.status_code == 200, one.text
        assert one.json()["state"] == "pending (1 of 2 approvals)" and one.json()["voted_by"] == "alice"
        twice = await alice.post(f"/approvals/{aid}/approve", json={"user": "alice"})
        assert "same person does not count twice" in problem(twice, 409, "duplicate_vote")["detail"]
        problem(await alice.post(f"/approvals/{aid}/approve", json={"user": "bob"}), 403, "wrong_user")
        problem(await analyst.post(f"/approvals/{aid}/approve", json={}), 403, "forbidden")
        not_approver = problem(await ana.post(f"/approvals/{aid}/approve", json={}), 403, "not_an_approver")
        assert "(analyst) may approve high risk" in not_approver["detail"]
        problem(await elsewhere.get(f"/approvals/{aid}"), 404, "unknown_approval")
        problem(await elsewhere.post(f"/approvals/{aid}/approve", json={}), 404, "unknown_approval")
        assert (await transfer(bus, gw.tenant, "c1")).decision == "require_approval", "still one short"

        two = await bob.post(f"/approvals/{aid}/approve", json={"reason": "second pair of eyes"})
        assert two.status_code == 200 and two.json()["state"] == "approved", two.text
        assert set(two.json()["approval"]["approved_by"]) == {"alice", "bob"}
        assert (await transfer(bus, gw.tenant, "c1")).code == "approved"
        late = await boss.post(f"/approvals/{aid}/approve", json={"user": "carol"})
        assert "already approved" in problem(late, 409, "approval_decided")["detail"]
        assert (await alice.get("/approvals")).json()["approvals"] == []


async def test_reject_and_unknown_approval(
    bus: Bus, start_gateway: Start, policy_service: ServiceContext, tenant: str
) -> None:
    gw = await operators(start_gateway, tenant)
    first = await delete_record(bus, gw.tenant, "c2")
    assert first.decision == "require_approval" and first.approval_id
    aid = first.approval_id
    async with as_(gw, "bob") as bob, as_(gw, "alice") as alice, as_(gw, "boss") as boss:
        problem(await bob.post(f"/approvals/{aid}/reject", json={}), 422, "reason_required")
        problem(
            await bob.post(f"/approvals/{aid}/reject", content=b"{nope", headers={"content-type": "application/json"}),
            400,
            "invalid_json",
        )
        rejected = await bob.post(f"/approvals/{aid}/reject", json={"reason": "wrong customer"})
        assert rejected.status_code == 200 and rejected.json()["state"] == "rejected", rejected.text
        again = await delete_record(bus, gw.tenant, "c2")
        assert (again.decision, again.code) == ("deny", "rejected") and "wrong customer" in again.reasons[0]
        late = await alice.post(f"/approvals/{aid}/approve", json={})
        assert "already rejected" in problem(late, 409, "approval_decided")["detail"]
        missing = unique("nope")
        problem(await alice.get(f"/approvals/{missing}"), 404, "unknown_approval")
        problem(await alice.post(f"/approvals/{missing}/approve", json={}), 404, "unknown_approval")
        problem(
            await boss.post(f"/approvals/{missing}/reject", json={"user": "carol", "reason": "x"}),
            404,
            "unknown_approval",
        )
        problem(await alice.get("/approvals", params={"status": "sideways"}), 400, "invalid_parameters")


async def test_takeover_answers_the_task(
    bus: Bus, start_gateway: Start, policy_service: ServiceContext, tenant: str
) -> None:
    gw = await operators(start_gateway, tenant)
    goal, task = unique("g"), unique("task")
    assigned = TaskAssigned(
        task_id=task,
        goal_id=goal,
        step_id="s1",
        attempt=1,
        agent="finance",
        capability="finance",
        instruction="pay",
        goal_text="pay the invoice",
    )
    await bus.publish(bus.new(assigned, tenant=gw.tenant, correlationid=goal))

    def delete_record() -> Any:  # the same guarded call, asked again after the take-over
        return ask(
            bus,
            gw.tenant,
            "finance",
            "tool_call",
            "delete_record",
            tool="delete_record",
            goal_id=goal,
            task_id=task,
            call_id="c6",
        )

    waiting = await delete_record()
    assert waiting.decision == "require_approval"
    answer = {"answer": "paid by hand"}
    async with as_(gw, "ana") as ana, as_(gw, "oscar") as oscar, as_(gw, "analyst") as analyst:
        denied = problem(await ana.post(f"/tasks/{task}/takeover", json={"answer": answer}), 403, "takeover_denied")
        assert "takeover denied" in denied["detail"]
        problem(await analyst.post(f"/tasks/{task}/takeover", json={"answer": answer}), 403, "forbidden")
        problem(
            await oscar.post(f"/tasks/{unique('task')}/takeover", json={"answer": answer}),
            404,
            "unknown_task",
        )
        problem(await oscar.post(f"/tasks/{task}/takeover", json={"answer": "not an object"}), 422, "invalid_body")
        done = await oscar.post(f"/tasks/{task}/takeover", json={"answer": answer})
        assert done.status_code == 200, done.text
        assert done.json()["user"] == "oscar" and done.json()["goal_id"] == goal and not done.json()["duplicate"]
        retry = await oscar.post(f"/tasks/{task}/takeover", json={"answer": answer})
        assert retry.status_code == 200 and retry.json()["duplicate"], "a retry publishes nothing new"
    events = [e for e in await stored(bus, f"agentos.{gw.tenant}.task.completed", wait_for=1) if e.data.task_id == task]
    assert len(events) == 1 and events[0].principal == "user:oscar" and events[0].data.agent == "user:oscar"
    assert isinstance(events[0].data, TaskCompleted) and events[0].data.output == answer
    assert events[0].correlationid == goal

    async def cancelled() -> bool:
        return (await delete_record()).code == "rejected"

    await eventually(cancelled, timeout=15, every=0.2)


# -- kill switches -------------------------------------------------------------------------------------


async def test_halt_over_http_is_seen_by_the_control_state_and_lifted(
    bus: Bus, start_gateway: Start, tenant: str
) -> None:
    gw = await operators(start_gateway, tenant)
    seen = control.ControlState()
    watcher = await control.ControlWatcher(bus.js, seen).start()
    agent, model = unique("agent"), f"openai/{unique('model')}"
    try:
        async with as_(gw, "ops") as ops, as_(gw, "alice") as bound, as_(gw, "analyst") as analyst:
            made = await ops.post("/halts", json={"scope": "agent", "target": agent, "reason": "runaway spend"})
            assert made.status_code == 201, made.text
            assert made.json()["key"] == f"halt.agent.{agent}" and made.json()["by"] == "key:ops"
            await eventually(holds(lambda: f"halt.agent.{agent}" in seen.halts), timeout=10)
            assert seen.covering(control.Work(agent=agent)) is not None
            assert seen.halts[f"halt.agent.{agent}"].reason == "runaway spend"
            listed = await analyst.get("/halts")
            assert listed.status_code == 200 and f"halt.agent.{agent}" in [h["key"] for h in listed.json()["halts"]]
            slashed = await ops.post("/halts", json={"scope": "model", "target": model})
            assert slashed.status_code == 201, slashed.text
            await eventually(holds(lambda: f"halt.model.{model}" in seen.halts), timeout=10)

            problem(await analyst.post("/halts", json={"scope": "agent", "target": agent}), 403, "forbidden")
            problem(await bound.post("/halts", json={"scope": "agent", "target": agent}), 403, "wrong_tenant")
            problem(await ops.post("/halts", json={"scope": "planet", "target": "x"}), 422, "invalid_body")
            problem(await ops.post("/halts", json={"scope": "agent"}), 422, "invalid_halt")
            problem(await ops.post("/halts", json={"scope": "agent", "target": "a b"}), 422, "invalid_halt")
            problem(await ops.delete("/halts/planet/x"), 400, "invalid_parameters")

            own = await bound.post("/halts", json={"scope": "tenant", "target": gw.tenant})
            assert own.status_code == 201, own.text
            await eventually(holds(lambda: seen.covering(control.Work(tenant=gw.tenant)) is not None), timeout=10)
            lifted_own = await bound.delete(f"/halts/tenant/{gw.tenant}")
            assert lifted_own.status_code == 200 and lifted_own.json()["was_on"]

            lifted = await ops.delete(f"/halts/agent/{agent}")
            assert lifted.status_code == 200 and lifted.json() == {
                "key": f"halt.agent.{agent}",
                "was_on": True,
            }
            await eventually(holds(lambda: f"halt.agent.{agent}" not in seen.halts), timeout=10)
            assert (await ops.delete(f"/halts/model/{model}")).json()["was_on"]
            await eventually(holds(lambda: f"halt.model.{model}" not in seen.halts), timeout=10)
            again = await ops.delete(f"/halts/agent/{agent}")
            assert again.status_code == 200 and again.json()["was_on"] is False
            assert f"halt.agent.{agent}" not in [h["key"] for h in (await ops.get("/halts")).json()["halts"]]
    finally:
        await watcher.stop()
        for key in (f"halt.agent.{agent}", f"halt.model.{model}", f"halt.tenant.{gw.tenant}"):
            kv = await control.open_bucket(bus.js)
            await kv.delete(key)
    halts = [
        e
        for e in await stored(bus, f"agentos.{gw.tenant}.control.halt_requested", wait_for=3)
        if isinstance(e.data, HaltRequested)
    ]
    assert {(e.data.scope, e.data.target, e.principal) for e in halts} >= {
        ("agent", agent, "key:ops"),
        ("model", model, "key:ops"),
        ("tenant", gw.tenant, "key:alice"),
    }
    resumes = await stored(bus, f"agentos.{gw.tenant}.control.resume_requested", wait_for=4)
    assert sum(1 for e in resumes if isinstance(e.data, ResumeRequested) and e.data.target == agent) == 2


async def test_budgets_show_spend_against_caps(
    bus: Bus, start_gateway: Start, policy_service: ServiceContext, tenant: str
) -> None:
    gw = await operators(start_gateway, tenant)
    tenant = unique("bud")
    allowed = await ask(
        bus,
        tenant,
        "spender",
        "model_call",
        "fast",
        goal_id="g",
        task_id="t",
        estimated_cost_usd=0.002,
        estimated_tokens=1000,
    )
    assert allowed.decision == "allow" and allowed.reservation_id
    async with as_(gw, "ops") as ops, as_(gw, "alice") as bound, as_(gw, "integrator") as integrator:
        report = await ops.get("/budgets", params={"tenant": tenant})
        assert report.status_code == 200, report.text
        lines = {(ln["scope"], ln["period"]): ln for ln in report.json()["lines"]}
        assert lines[("tenant", "day")]["cap_usd"] == 0.01
        assert abs(lines[("tenant", "day")]["reserved_usd"] - 0.002) < 1e-9
        assert report.json()["policy_version"]
        problem(await bound.get("/budgets", params={"tenant": tenant}), 403, "wrong_tenant")
        problem(await integrator.get("/budgets"), 403, "forbidden")


# -- audit ---------------------------------------------------------------------------------------------


async def seed_goal(bus: Bus, tenant: str, agent: str) -> tuple[str, list[str]]:
    """A goal with one task: submitted → assigned → completed (a causal chain); returns the ids."""
    goal, task = unique("goal"), unique("task")
    submitted = bus.new(GoalSubmitted(goal_id=goal, text="Audit me"), tenant=tenant, correlationid=goal, id=goal)
    assigned = bus.new(
        TaskAssigned(
            task_id=task,
            goal_id=goal,
            step_id="s1",
            attempt=1,
            agent=agent,
            capability="research",
            instruction="look",
            goal_text="Audit me",
        ),
        cause=submitted,
    )
    completed = bus.new(
        TaskCompleted(task_id=task, goal_id=goal, step_id="s1", agent=agent, output={"answer": "found it"}),
        cause=assigned,
    )
    for event in (submitted, assigned, completed):
        await bus.publish(event)
    return goal, [submitted.id, assigned.id, completed.id]


async def rows_of(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    resp = await client.get("/audit/query", params=params)
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()["rows"]
    return rows


async def test_audit_query_and_trace(
    bus: Bus, start_gateway: Start, audit_service: ServiceContext, tenant: str
) -> None:
    gw = await operators(start_gateway, tenant)
    agent = unique("auditor")
    goal, ids = await seed_goal(bus, gw.tenant, agent)
    found: list[dict[str, Any]] = []
    async with as_(gw, "analyst") as analyst, as_(gw, "ops") as ops:

        async def projected() -> bool:
            found[:] = await rows_of(analyst, goal=goal)
            return len(found) == 3

        await eventually(projected, timeout=90, every=0.5)
        assert [r["id"] for r in found] == list(reversed(ids)), "newest first"
        assert all(r["tenant"] == gw.tenant for r in found) and found[0]["time"].endswith("+00:00")

        only = await rows_of(analyst, agent=agent, type="task.completed", since="1h")
        assert [r["id"] for r in only] == [ids[2]]
        assert await rows_of(analyst, agent=agent, until="2000-01-01") == []

        page1 = await analyst.get("/audit/query", params={"goal": goal, "limit": 2})
        assert page1.status_code == 200 and page1.json()["count"] == 2 and page1.json()["next_cursor"]
        assert 'rel="next"' in page1.headers["link"]
        page2 = await analyst.get(
            "/audit/query", params={"goal": goal, "limit": 2, "cursor": page1.json()["next_cursor"]}
        )
        assert [r["id"] for r in page2.json()["rows"]] == [ids[0]] and page2.json()["next_cursor"] is None

        as_csv = await analyst.get("/audit/query", params={"goal": goal, "format": "csv"})
        assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [r["id"] for r in table] == list(reversed(ids)) and table[0]["agent"] == agent
        assert {"seq", "time", "type", "goal_id", "tools", "tags"} <= set(table[0])

        bad = problem(await analyst.get("/audit/query", params={"since": "yesterday"}), 400, "invalid_filter")
        assert "yesterday" in bad["detail"]
        problem(await analyst.get("/audit/query", params={"type": "no.such"}), 400, "invalid_filter")
        problem(await analyst.get("/audit/query", params={"limit": 0}), 400, "invalid_filter")
        problem(await analyst.get("/audit/query", params={"limit": 10_000}), 400, "invalid_filter")
        problem(await analyst.get("/audit/query", params={"cursor": "garbage"}), 400, "invalid_filter")
        problem(await analyst.get("/audit/query", params={"limit": "many"}), 400, "invalid_parameters")
        problem(await analyst.get("/audit/query", params={"format": "xml"}), 400, "invalid_parameters")
        problem(await analyst.get("/audit/query", params={"since": "1h", "until": "2h"}), 400, "invalid_filter")
        problem(await analyst.get("/audit/query", params={"tenant": "someone-else"}), 403, "wrong_tenant")
        problem(await ops.get("/audit/query", params={"goal": goal}), 403, "forbidden")

        trace = await analyst.get(f"/audit/trace/{goal}")
        assert trace.status_code == 200, trace.text
        doc = trace.json()
        events = {e["id"]: e for e in doc["events"]}
        assert doc["roots"] == [ids[0]] and [e["id"] for e in doc["events"]] == ids and not doc["truncated"]
        assert events[ids[0]]["children"] == [ids[1]] and events[ids[1]]["children"] == [ids[2]]
        assert events[ids[2]]["parent_id"] == ids[1] and events[ids[0]]["parent_id"] is None
        assert "goal: Audit me" in events[ids[0]]["details"]
        assert [(t["task_id"], t["agent"], t["outcome"]) for t in doc["tasks"]] == [
            (events[ids[1]]["task_id"], agent, "completed")
        ]
        cut = (await analyst.get(f"/audit/trace/{goal}", params={"max_events": 2})).json()
        assert cut["truncated"] and [e["id"] for e in cut["events"]] == ids[:2]
        problem(await analyst.get(f"/audit/trace/{unique('goal')}"), 404, "unknown_goal")
        problem(await analyst.get(f"/audit/trace/{goal}", params={"max_events": 0}), 400, "invalid_filter")
        problem(await ops.get(f"/audit/trace/{goal}"), 403, "forbidden")


async def test_operator_routes_are_in_the_openapi_document(start_gateway: Start, tenant: str) -> None:
    gw = await operators(start_gateway, tenant)
    async with as_(gw, "ops") as ops:
        spec = (await ops.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        ("/approvals", "get"),
        ("/approvals/{approval_id}", "get"),
        ("/approvals/{approval_id}/approve", "post"),
        ("/approvals/{approval_id}/reject", "post"),
        ("/tasks/{task_id}/takeover", "post"),
        ("/halts", "get"),
        ("/halts", "post"),
        ("/halts/all", "delete"),
        ("/halts/{scope}/{target}", "delete"),
        ("/budgets", "get"),
        ("/audit/query", "get"),
        ("/audit/trace/{goal_id}", "get"),
    }
    for path, method in expected:
        operation = paths[path][method]
        assert operation["summary"], (path, method)
        assert {"401", "403"} <= set(operation["responses"]), (path, method)
        assert "application/problem+json" in operation["responses"]["403"]["content"]
    assert "text/csv" in paths["/audit/query"]["get"]["responses"]["200"]["content"]
