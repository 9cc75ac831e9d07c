"""Budgets: reservations race for the last of a cap without overspending, settlements replace
estimates with real costs, a budget exhausted mid-task ends it with code ``budget``, and
`agentos budget` shows spend against caps."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import eventually, unique
from agentos_policy import ledger
from agentos_schemas import Event
from agentos_schemas.events import ModelCall, Settlement, TaskCompleted
from agentos_schemas.events.policy import BudgetSettled, BudgetSettlementRequested, PolicyDecided
from agentos_schemas.money import usd
from agentos_schemas.rpc import PolicyRequest
from agentos_specialist.runner import Progress, run_agent
from agentos_specialist.tools import DocumentIndex, ToolContext, build_tools

from tests.policy.conftest import (
    ScriptedLLM,
    ask,
    charter,
    client,
    context_event,
    logged,
    logged_at_least,
    logged_events,
    no_snapshot,
    tool_call,
)
from tests.policy.test_approvals import cli

CAP = 0.01
EACH = 0.0007


async def tenant_counter(pool: asyncpg.Pool, tenant: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT used_usd, reserved_usd, cap_usd FROM policy.budget_counters "
        "WHERE tenant = $1 AND scope = 'tenant' AND period = 'day'",
        tenant,
    )


async def test_concurrent_reservations_never_pass_the_cap(
    bus: Bus, pool: asyncpg.Pool, policy_service: ServiceContext
) -> None:
    tenant = unique("bud")
    answers = await asyncio.gather(
        *(
            ask(
                bus,
                tenant,
                "spender",
                "model_call",
                "fast",
                goal_id=f"g{n}",
                task_id=f"t{n}",
                estimated_cost_usd=EACH,
                estimated_tokens=1000,
            )
            for n in range(40)
        )
    )
    allowed = [a for a in answers if a.decision == "allow"]
    denied = [a for a in answers if a.decision == "deny"]
    assert len(allowed) == int(CAP / EACH) == 14, [a.reasons for a in denied[:2]]
    assert all(a.code == "budget" and "tenant" in a.reasons[0] for a in denied)
    row = await tenant_counter(pool, tenant)
    assert float(row["reserved_usd"]) <= CAP and float(row["cap_usd"]) == CAP
    policy = client(bus)
    request = PolicyRequest(
        tenant=tenant, principal="agent:spender", action="model_call", resource="fast", agent="spender"
    )
    call = ModelCall(model="openai/offline-fast", ok=True, input_tokens=400, output_tokens=200, cost_usd=0.0005)
    await asyncio.gather(*(policy.settle(a, request, [call]) for a in allowed))

    async def settled() -> bool:
        return len(await logged(bus, tenant, BudgetSettled)) == len(allowed)

    await eventually(settled, timeout=15)
    row = await tenant_counter(pool, tenant)
    assert float(row["reserved_usd"]) == 0 and float(row["used_usd"]) == round(14 * 0.0005, 6) <= CAP
    await policy.settle(allowed[0], request, [call])  # a redelivered settlement changes nothing
    await asyncio.sleep(0.5)
    assert float((await tenant_counter(pool, tenant))["used_usd"]) == round(14 * 0.0005, 6)


async def test_token_caps(bus: Bus, policy_service: ServiceContext) -> None:
    tenant = unique("tok")
    got = [await ask(bus, tenant, "spender", "model_call", "fast", estimated_tokens=4000) for _ in range(3)]
    assert [g.decision for g in got] == ["allow", "allow", "deny"] and "tokens" in got[2].reasons[0]


async def test_budget_exhausted_mid_task_fails_it_with_code_budget(
    bus: Bus, pool: asyncpg.Pool, policy_service: ServiceContext
) -> None:
    tenant, goal = unique("bud"), unique("g")
    calls = [[tool_call("search_documents", {"query": f"competitor {n}"}, n)] for n in range(20)]
    llm = ScriptedLLM(calls, cost=0.002)  # each call reserves ~$0.0025 (4096 output tokens) and costs $0.002
    event = context_event(bus, tenant, "spender", goal, f"{goal}/r0/s1/a1")
    tools = build_tools(DocumentIndex.from_folder())
    outcome = await run_agent(
        llm,
        charter("spender", ("search_documents",), max_tool_rounds=20),
        Progress(messages=[dict(m) for m in event.data.messages]),
        tools,
        ToolContext(bus, event),
        no_snapshot,
    )
    assert not outcome.ok and outcome.code == "budget" and not outcome.retryable, outcome.reason
    assert "tenant" in outcome.reason and 3 <= len(llm.seen) <= 5

    async def settled() -> bool:
        return len(await logged(bus, tenant, BudgetSettled)) == len(llm.seen)

    await eventually(settled, timeout=15)
    row = await tenant_counter(pool, tenant)
    assert float(row["used_usd"]) <= CAP and float(row["reserved_usd"]) == 0
    # model + tool per round, and the denied model call (facts are published after the reply)
    decided = await logged_at_least(bus, tenant, PolicyDecided, 2 * len(llm.seen) + 1)
    model_calls = [d for d in decided if d.request.action == "model_call"]
    denied = [d for d in model_calls if d.decision == "deny"]  # facts are batched, so not in call order
    assert len(denied) == 1 and denied[0].code == "budget"
    assert all(d.decision == "allow" for d in model_calls if d is not denied[0])


async def test_agentos_budget_shows_spend_against_caps(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext
) -> None:
    tenant = unique("bud")
    assert (await ask(bus, tenant, "spender", "model_call", "fast", estimated_cost_usd=0.004)).decision == "allow"
    result = await cli(settings, "budget", "--tenant", tenant, "--json")
    assert result.exit_code == 0, result.output
    lines = {(ln["scope"], ln["period"]): ln for ln in json.loads(result.output)["lines"]}
    assert set(lines) == {("tenant", "day"), ("tenant", "month"), ("agent", "day")}
    assert lines[("tenant", "day")]["reserved_usd"] == 0.004 and lines[("tenant", "day")]["cap_usd"] == CAP
    table = await cli(settings, "budget", "--tenant", tenant)
    assert tenant in table.output and "0.004" in table.output and "test-1" in table.output


async def test_agentos_budget_shows_amounts_below_a_cent_as_they_are(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext
) -> None:
    """A $0.005 cap is not shown as 0.01, nor a $0.00004 reservation as 0.0000."""
    tenant = unique("half")
    assert (await ask(bus, tenant, "spender", "model_call", "fast", estimated_cost_usd=0.00004)).decision == "allow"
    table = await cli(settings, "budget", "--tenant", tenant)
    assert table.exit_code == 0 and "0.005" in table.output and "0.00004" in table.output
    assert "0.01" not in table.output and "0.0000 " not in table.output


async def test_a_reservation_never_settled_is_charged_at_its_estimate(
    bus: Bus, pool: asyncpg.Pool, policy_service: ServiceContext
) -> None:
    tenant = unique("bud")
    allowed = await ask(bus, tenant, "spender", "model_call", "fast", estimated_cost_usd=0.003, estimated_tokens=500)
    assert allowed.decision == "allow" and allowed.reservation_id is not None
    await asyncio.sleep(0.05)
    while await ledger.expire_reservations(pool, 0.01):  # every open one older than 10 ms, this one included
        pass
    row = await tenant_counter(pool, tenant)
    assert float(row["reserved_usd"]) == 0 and float(row["used_usd"]) == 0.003
    status = await pool.fetchrow(
        "SELECT status, cost_usd, tokens FROM policy.budget_reservations WHERE id = $1", allowed.reservation_id
    )
    assert status["status"] == "expired" and float(status["cost_usd"]) == 0.003 and status["tokens"] == 500
    assert await ledger.settle(pool, unique("e"), allowed.reservation_id, 0.001, 100) is None  # too late
    assert float((await tenant_counter(pool, tenant))["used_usd"]) == 0.003


async def test_a_settlement_redelivered_after_its_commit_still_gets_its_event(
    bus: Bus, pool: asyncpg.Pool, policy_service: ServiceContext
) -> None:
    """The ledger committed but ``budget.settled`` was never published (the service died between):
    the redelivered request finds its own settlement and publishes the event (same derived id)."""
    tenant = unique("bud")
    allowed = await ask(bus, tenant, "spender", "model_call", "fast", estimated_cost_usd=0.003, estimated_tokens=500)
    assert allowed.reservation_id is not None
    event_id = unique("e")
    first = await ledger.settle(pool, event_id, allowed.reservation_id, 0.001, 100)
    assert first is not None and first.estimated_usd == 0.003
    assert await ledger.settle(pool, event_id, allowed.reservation_id, 0.001, 100) is None  # once only
    again = await ledger.settled_by(pool, event_id, allowed.reservation_id)
    assert again == first
    assert await ledger.settled_by(pool, unique("e"), allowed.reservation_id) is None  # not that request's
    assert float((await tenant_counter(pool, tenant))["used_usd"]) == 0.001


async def reservation(pool: asyncpg.Pool, reservation_id: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT status, cost_usd, tokens FROM policy.budget_reservations WHERE id = $1", reservation_id
    )


async def test_the_answering_call_is_settled_through_task_completed(
    bus: Bus, pool: asyncpg.Pool, policy_service: ServiceContext
) -> None:
    """A tool round's call is settled on its own (before the next decision); the call whose answer
    completes the task rides on ``task.completed``, which the policy settles like a request."""
    tenant, goal = unique("bud"), unique("g")
    task_id = f"{goal}/r0/s1/a1"
    llm = ScriptedLLM([[tool_call("search_documents", {"query": "competitor"})], {"answer": "done"}], cost=0.0009)
    event = context_event(bus, tenant, "spender", goal, task_id)
    outcome = await run_agent(
        llm,
        charter("spender", ("search_documents",)),
        Progress(messages=[dict(m) for m in event.data.messages]),
        build_tools(DocumentIndex.from_folder()),
        ToolContext(bus, event),
        no_snapshot,
    )
    assert outcome.ok and outcome.settlement is not None, outcome.reason
    assert outcome.settlement.cost_usd == 0.0009 and outcome.settlement.tokens == 400
    requested = await logged(bus, tenant, BudgetSettlementRequested)  # before the 2nd decision
    assert len(requested) == 1 and requested[0].reservation_id != outcome.settlement.reservation_id
    last = outcome.settlement.reservation_id
    assert (await reservation(pool, last))["status"] == "reserved"

    def completed(
        settlement: Settlement, *, task: str = task_id, principal: str | None = None, agent: str = "spender"
    ) -> Event[TaskCompleted]:
        data = TaskCompleted(
            task_id=task, goal_id=goal, step_id="s1", agent=agent, output={"answer": "x"}, settlement=settlement
        )
        return bus.new(data, tenant=tenant, principal=principal)

    # Not settled by another task's completion, by another agent's, nor by a human's takeover.
    await bus.publish(completed(outcome.settlement, task=f"{goal}/r0/s2/a1"))
    await bus.publish(completed(outcome.settlement, agent="writer"))
    await bus.publish(completed(outcome.settlement, principal="user:ann", agent="user:ann"))
    done = completed(outcome.settlement)
    await bus.publish(done)
    settled = await logged_at_least(bus, tenant, BudgetSettled, 2, timeout=15)
    by_id = {s.reservation_id: s for s in settled}
    assert set(by_id) == {requested[0].reservation_id, last}
    assert by_id[last].cost_usd == 0.0009 and by_id[last].tokens == 400 and by_id[last].agent == "spender"
    row = await reservation(pool, last)
    assert row["status"] == "settled" and float(row["cost_usd"]) == 0.0009 and row["tokens"] == 400
    settled_events = await logged_events(bus, tenant, BudgetSettled)
    assert next(e for e in settled_events if e.data.reservation_id == last).causationid == done.id
    assert float((await tenant_counter(pool, tenant))["reserved_usd"]) == 0
    assert float((await tenant_counter(pool, tenant))["used_usd"]) == round(2 * 0.0009, 6)
    await bus.publish(completed(outcome.settlement))  # a redelivery (new id) settles nothing again
    await asyncio.sleep(0.5)
    assert len(await logged(bus, tenant, BudgetSettled)) == 2
    assert float((await tenant_counter(pool, tenant))["used_usd"]) == round(2 * 0.0009, 6)


async def test_a_task_result_settles_each_reservation_once_and_only_its_own(
    bus: Bus, pool: asyncpg.Pool, policy_service: ServiceContext
) -> None:
    """A result redelivered after the ledger committed finds its settlement; a re-run's new final
    call under the same result id is settled too; another tenant's or task's result settles nothing."""
    tenant = unique("bud")

    async def reserve(task_id: str) -> str:
        allowed = await ask(
            bus,
            tenant,
            "spender",
            "model_call",
            "fast",
            task_id=task_id,
            estimated_cost_usd=0.003,
            estimated_tokens=500,
        )
        assert allowed.reservation_id is not None
        return allowed.reservation_id

    first_run, re_run, other = await reserve("t1"), await reserve("t1"), await reserve("t2")
    event_id = unique("e")
    key = ledger.task_settlement_id(event_id, first_run)
    done = await ledger.settle_task(pool, key, first_run, 0.001, 100, tenant, "t1", "spender")
    assert done is not None and done.estimated_usd == 0.003
    assert await ledger.settle_task(pool, key, first_run, 0.001, 100, tenant, "t1", "spender") is None
    assert await ledger.settled_by(pool, key, first_run) == done  # the redelivery publishes budget.settled
    re_key = ledger.task_settlement_id(event_id, re_run)
    assert await ledger.settle_task(pool, re_key, re_run, 0.002, 200, tenant, "t1", "spender") is not None
    for wrong in [("someone-else", "t2", "spender"), (tenant, "t1", "spender"), (tenant, "t2", "writer")]:
        assert (
            await ledger.settle_task(pool, ledger.task_settlement_id(unique("e"), other), other, 0.0, 0, *wrong) is None
        )
    assert (await reservation(pool, other))["status"] == "reserved"
    row = await tenant_counter(pool, tenant)
    assert float(row["used_usd"]) == 0.003 and float(row["reserved_usd"]) == 0.003


async def test_calls_are_settled_when_the_task_is_cancelled_or_its_result_cannot_carry_it(
    bus: Bus, policy_service: ServiceContext
) -> None:
    tenant, goal = unique("bud"), unique("g")
    event = context_event(bus, tenant, "spender", goal, f"{goal}/r0/s1/a1")
    entered = asyncio.Event()

    async def stuck(progress: Progress) -> None:  # the snapshot after an invalid answer never ends
        entered.set()
        await asyncio.Event().wait()

    llm = ScriptedLLM([{"not_the_answer": 1}], cost=0.0007)
    progress = Progress(messages=list(event.data.messages))
    running = asyncio.create_task(run_agent(llm, charter("spender"), progress, {}, ToolContext(bus, event), stuck))
    await asyncio.wait_for(entered.wait(), 10)
    assert await logged(bus, tenant, BudgetSettlementRequested) == []  # the invalid answer's call is pending
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    [requested] = await logged_at_least(bus, tenant, BudgetSettlementRequested, 1)
    assert requested.cost_usd == 0.0007

    # An answer whose task.completed cannot carry its settlement has it published apart. (Another
    # task: the same task's same call asked again would be the call above, and hold its reservation.)
    other = context_event(bus, tenant, "spender", goal, f"{goal}/r0/s1/a2")
    outcome = await run_agent(
        ScriptedLLM([{"answer": "x"}]),
        charter("spender"),
        Progress(messages=list(other.data.messages)),
        {},
        ToolContext(bus, other),
        no_snapshot,
    )
    assert outcome.ok and outcome.settlement is not None and outcome.settle_separately is not None
    await outcome.settle_separately()
    requested_all = await logged_at_least(bus, tenant, BudgetSettlementRequested, 2)
    assert outcome.settlement.reservation_id in {r.reservation_id for r in requested_all}


def test_money_is_shown_with_every_digit_it_has() -> None:
    assert [usd(v) for v in (0.005, 5, 0.1 + 0.2, 0.00004, 0, -0.25, 1000)] == [
        "$0.005",
        "$5.00",
        "$0.30",
        "$0.00004",
        "$0.00",
        "-$0.25",
        "$1000.00",
    ]
    assert usd(0.005, symbol=False) == "0.005"


async def task_reservations(pool: asyncpg.Pool, tenant: str, task_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, status, cost_usd FROM policy.budget_reservations "
        "WHERE tenant = $1 AND task_id = $2 ORDER BY created_at",
        tenant,
        task_id,
    )


async def test_the_same_call_asked_again_holds_one_reservation(
    bus: Bus, pool: asyncpg.Pool, policy_service: ServiceContext
) -> None:
    """Same call id -> same reservation, held once; once it is settled the call asked again is a new
    run with a reservation of its own."""
    tenant = unique("bud")

    async def decide(call_id: str) -> str:
        allowed = await ask(
            bus,
            tenant,
            "spender",
            "model_call",
            "fast",
            task_id="t1",
            call_id=call_id,
            estimated_cost_usd=0.002,
            estimated_tokens=300,
        )
        assert allowed.decision == "allow" and allowed.reservation_id is not None
        return allowed.reservation_id

    first, again, other = await decide("t1:model:2"), await decide("t1:model:2"), await decide("t1:model:4")
    assert first == again != other
    assert float((await tenant_counter(pool, tenant))["reserved_usd"]) == 0.004  # two calls, not three
    assert await ledger.settle(pool, unique("e"), first, 0.001, 100) is not None
    rerun = await decide("t1:model:2")
    assert rerun not in (first, other)
    rows = {r["id"]: r["status"] for r in await task_reservations(pool, tenant, "t1")}
    assert rows == {first: "settled", other: "reserved", rerun: "reserved"}


class CrashingLLM(ScriptedLLM):
    """The model call of the first run never returns: the run is killed while it is in flight."""

    def __init__(self) -> None:
        super().__init__([{"answer": "x"}])
        self.entered = asyncio.Event()

    async def complete(
        self, chain: list[str], messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[Any, list[ModelCall]]:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_model_call_re_run_after_a_crash_reuses_its_reservation(
    bus: Bus, pool: asyncpg.Pool, policy_service: ServiceContext
) -> None:
    """A task killed during its model call and run again (redelivered, from the same snapshot)
    makes the same call: it keeps the reservation the first run took, and that one is settled, so
    no reservation is left to be charged at its estimate when its TTL ends."""
    tenant, goal = unique("bud"), unique("g")
    task_id = f"{goal}/r0/s1/a1"
    event = context_event(bus, tenant, "spender", goal, task_id)
    crashing = CrashingLLM()
    first = asyncio.create_task(
        run_agent(
            crashing,
            charter("spender"),
            Progress(messages=list(event.data.messages)),
            {},
            ToolContext(bus, event),
            no_snapshot,
        )
    )
    await asyncio.wait_for(crashing.entered.wait(), 10)
    first.cancel()  # the replica dies mid-call
    with pytest.raises(asyncio.CancelledError):
        await first
    [held] = await task_reservations(pool, tenant, task_id)
    assert held["status"] == "reserved"

    outcome = await run_agent(
        ScriptedLLM([{"answer": "x"}], cost=0.0005),
        charter("spender"),
        Progress(messages=list(event.data.messages)),
        {},
        ToolContext(bus, event),
        no_snapshot,
    )
    assert outcome.ok and outcome.settlement is not None
    assert outcome.settlement.reservation_id == held["id"], "the re-run holds the first run's reservation"
    assert outcome.settle_separately is not None
    await outcome.settle_separately()

    async def settled() -> bool:
        rows = await task_reservations(pool, tenant, task_id)
        return [(r["id"], r["status"]) for r in rows] == [(held["id"], "settled")]

    await eventually(settled, timeout=15)
    counter = await tenant_counter(pool, tenant)
    assert float(counter["reserved_usd"]) == 0 and float(counter["used_usd"]) == 0.0005
