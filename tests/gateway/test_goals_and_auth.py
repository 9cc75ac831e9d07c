"""POST /goals and GET /goals/{id}; idempotency keys; API key roles and rate limits."""

from __future__ import annotations

import asyncio
from typing import Any

from agentos_schemas import Event, codec
from agentos_schemas.events import GoalCompleted, GoalPlanned, GoalSubmitted, PlanStep

from tests.gateway.conftest import Running, dead_letters, dlq_seq, key_for, stored
from tests.gateway.test_events import STRUCTURED, problem, ticket


async def test_submit_a_goal_and_poll_its_status_folded_from_the_log(gateway: Running) -> None:
    async with gateway.client("operator") as http:
        resp = await http.post(
            "/goals", json={"text": "Summarise refunds", "inputs": {"week": 47}, "limits": {"max_steps": 5}}
        )
        assert resp.status_code == 202, resp.text
        goal_id = resp.json()["goal_id"]
        assert resp.headers["location"] == f"/goals/{goal_id}"
        status = await http.get(resp.headers["location"])
        assert status.status_code == 200 and status.json()["status"] == "submitted"
        assert status.json()["text"] == "Summarise refunds" and status.json()["complete"] is True
        cause = (await stored(gateway.bus, f"agentos.{gateway.tenant}.goal.submitted", wait_for=1))[0]
        assert cause.data.limits.max_steps == 5 and cause.principal == "key:operator-key"
        plan = GoalPlanned(
            goal_id=goal_id,
            revision=0,
            planner="workflow:t",
            steps=(PlanStep(step_id="a", capability="write", instruction="x"),),
        )
        done = GoalCompleted(goal_id=goal_id, result="All good", cost_usd=0.01, tokens=42)
        for data in (plan, done):
            await gateway.bus.publish(gateway.bus.new(data, cause=cause))
        final = (await http.get(f"/goals/{goal_id}")).json()
        assert (final["status"], final["result"], final["steps"], final["tokens"]) == (
            "completed",
            "All good",
            1,
            42,
        )
        problem(await http.get("/goals/0190f0c4-0000-7000-8000-000000000000"), 404, "unknown_goal")


async def test_bad_goal_requests_are_problems_kept_in_the_dlq(gateway: Running) -> None:
    start = await dlq_seq(gateway.bus)
    async with gateway.client() as http:
        doc = problem(await http.post("/goals", json={"text": ""}), 422, "invalid_goal")
        assert doc["errors"][0]["field"] == "text"
        problem(await http.post("/goals", json={"text": "x", "colour": "red"}), 422, "invalid_goal")
        problem(
            await http.post("/goals", content=b"{text", headers={"content-type": "application/json"}),
            400,
            "invalid_json",
        )
        problem(
            await http.post("/goals", content=b"text", headers={"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
        )
        problem(await http.post("/goals", json={"text": "x", "tenant": "other"}), 403, "wrong_tenant")
    letters = await dead_letters(gateway.bus, start, wait_for=4)
    assert [m.headers["AgentOS-DLQ-Code"] for m in letters] == [
        "invalid_goal",
        "invalid_goal",
        "invalid_json",
        "unsupported_media_type",
    ]


async def test_an_idempotency_key_replays_the_first_response_and_makes_one_goal(gateway: Running) -> None:
    async with gateway.client() as http:
        key = {"Idempotency-Key": "order-1234-retry"}
        first = await http.post("/goals", json={"text": "Refund order 1234"}, headers=key)
        second = await http.post("/goals", json={"text": "Refund order 1234"}, headers=key)
        assert first.status_code == second.status_code == 202
        assert first.json() == second.json() and second.headers["idempotency-replayed"] == "true"
        assert second.headers["location"] == first.headers["location"]
        reused = await http.post("/goals", json={"text": "Something else"}, headers=key)
        problem(reused, 422, "idempotency_key_reused")
        event = ticket(gateway.tenant, 5)
        both = await asyncio.gather(
            *(
                http.post("/events", content=codec.encode(event), headers=STRUCTURED | {"Idempotency-Key": "ev-5"})
                for _ in range(2)
            )
        )
        assert [r.status_code for r in both] == [202, 202]
    async with gateway.client("admin") as other:  # another caller's keys are its own
        third = await other.post("/goals", json={"text": "Refund order 1234"}, headers=key)
        assert third.status_code == 202 and third.json()["goal_id"] != first.json()["goal_id"]
    goals = await stored(gateway.bus, f"agentos.{gateway.tenant}.goal.submitted", wait_for=2)
    assert sorted(e.data.goal_id for e in goals) == sorted([first.json()["goal_id"], third.json()["goal_id"]])
    assert len(await stored(gateway.bus, f"agentos.{gateway.tenant}.ticket.*", wait_for=1)) == 1


async def test_roles_decide_who_may_call_what(gateway: Running) -> None:
    event = codec.encode(ticket(gateway.tenant))
    expectations: list[tuple[str | None, str, str, Any, int]] = [
        (None, "POST", "/events", event, 401),
        ("analyst", "POST", "/events", event, 403),
        ("operator", "POST", "/events", event, 403),
        ("integrator", "POST", "/events", event, 202),
        ("admin", "POST", "/events", event, 202),
        ("analyst", "POST", "/goals", b'{"text": "x"}', 403),
        ("operator", "POST", "/goals", b'{"text": "x"}', 202),
        ("analyst", "GET", "/goals/0190f0c4-0000-7000-8000-000000000000", None, 404),
        ("operator", "POST", "/mappings/square/preview", b"{}", 403),
    ]
    for role, method, path, body, status in expectations:
        async with gateway.client(role) as http:
            resp = await http.request(method, path, content=body, headers=STRUCTURED if path == "/events" else {})
            assert resp.status_code == status, (role, path, resp.text)
    async with gateway.client(None, headers={"X-API-Key": "wrong"}) as http:
        problem(await http.post("/events", content=event, headers=STRUCTURED), 401, "invalid_api_key")
    async with gateway.client(None, headers={"X-API-Key": key_for("integrator", gateway.tenant)}) as http:
        assert (await http.post("/events", content=event, headers=STRUCTURED)).status_code == 202


async def test_rate_limits_answer_429_with_retry_after(start_gateway: Any) -> None:
    gw = await start_gateway(rate_per_s=2, burst=3)
    async with gw.client("operator") as http:
        codes = [(await http.post("/mappings/square/preview", json={})).status_code for _ in range(5)]
        assert codes == [403, 403, 403, 403, 403]  # a role failure does not spend the rate
        async with gw.client("analyst") as analyst:
            codes = []
            for _ in range(5):
                resp = await analyst.post("/mappings/square/preview", json={"type": "x"})
                codes.append(resp.status_code)
            assert codes[:3] == [422, 422, 422] and codes[3:] == [429, 429]
            assert int(resp.headers["retry-after"]) >= 1 and resp.json()["code"] == "rate_limited"
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
        assert health.status_code == 200 and ready.status_code == 200 and ready.json()["status"] == "ready"
        spec = (await http.get("/openapi.json")).json()
        assert {"/events", "/goals", "/goals/{goal_id}", "/webhooks/{source}"} <= set(spec["paths"])
        docs = await http.get("/docs")
        # Swagger UI from assets the gateway serves itself: the page works with no internet
        assert docs.status_code == 200 and "cdn" not in docs.text.lower() and "/docs-assets/" in docs.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            assert (await http.get(f"/docs-assets/{asset}")).status_code == 200
        redoc = await http.get("/redoc")
        assert redoc.status_code == 200 and "cdn" not in redoc.text.lower()


def test_goal_submitted_is_what_the_orchestrator_reads() -> None:
    assert GoalSubmitted.ce_type() == "dev.agentos.goal.submitted.v1"
    assert Event  # the fold reads typed events from the log
