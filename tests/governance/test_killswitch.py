"""Kill switches: a halt reaches every replica, cancels in-flight model calls, starts none, and a
resume lets the paused goal finish — across two specialist replicas, on a real JetStream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from agentos_cli.control_cmd import do_halt, do_resume, pick_scope
from agentos_kernel import AgentOSError, Bus, control
from agentos_kernel.testing import eventually, unique
from agentos_schemas import Event
from agentos_schemas.events import (
    GoalCompleted,
    GoalFailed,
    HaltRequested,
    ResumeRequested,
    TaskCompleted,
    TaskStarted,
)

from tests.e2e.conftest import goal_events
from tests.governance.conftest import SLOW_MS, Fleet


async def test_one_watcher_per_scope_and_guard_cancels(fleet: Fleet) -> None:
    """Unit-level: every scope is a key; a guarded task is cancelled into Halted; resume clears it."""
    gbus = fleet.bus
    state = control.ControlState()
    watcher = await control.ControlWatcher(gbus.js, state).start()
    try:
        work = control.Work(agent="writer", workflow="g-1", tenant="acme", models=("fast",))
        assert work.switch_keys() == [
            "halt.all",
            "halt.agent.writer",
            "halt.workflow.g-1",
            "halt.tenant.acme",
            "halt.model.fast",
        ]

        async def guarded() -> str:
            async with state.guard(work):
                await asyncio.sleep(30)
            return "finished"

        task = asyncio.create_task(guarded())
        await asyncio.sleep(0.05)
        await control.set_halt(gbus.js, control.Halt("model", "fast", "provider incident", "test"))
        with pytest.raises(control.Halted, match="provider incident"):
            await asyncio.wait_for(task, 5)
        with pytest.raises(control.Halted):
            state.check(control.Work(models=("fast",)))
        state.check(control.Work(models=("smart",)))
        assert await control.clear_halt(gbus.js, "model", "fast")
        await eventually(lambda: _async(state.covering(work) is None), timeout=5)
        assert not await control.clear_halt(gbus.js, "model", "fast")
    finally:
        await watcher.stop()


async def _async(value: bool) -> bool:
    return value


def test_cli_scope_validation() -> None:
    assert pick_scope("writer", None, None, None, False) == ("agent", "writer")
    assert pick_scope(None, None, None, None, True) == ("all", "*")
    with pytest.raises(AgentOSError):
        pick_scope("writer", None, None, "acme", False)
    with pytest.raises(AgentOSError):
        pick_scope(None, None, "bad name!", None, False)


async def test_halt_cancels_in_flight_calls_on_two_replicas_and_resume_finishes(fleet: Fleet) -> None:
    from agentos_cli.goals import submit

    gbus, model = fleet.bus, fleet.model
    tenant = unique("ks")
    goal = await submit(gbus, "Two slow answers, please.", tenant=tenant, workflow="slow-pair")
    goal_id = goal.data.goal_id

    async def two_calls_in_flight() -> bool:
        events = await goal_events(gbus, goal_id)
        instances = {e.data.instance for e in events if isinstance(e.data, TaskStarted)}
        return len(instances) == 2 and model.active() == 2

    try:
        await eventually(two_calls_in_flight, timeout=30, every=0.1)
    except AssertionError:
        events = await goal_events(gbus, goal_id)
        raise AssertionError(
            f"{[(e.type, getattr(e.data, 'instance', '')) for e in events]} "
            f"{[(r['start'], r['end']) for r in model.requests]}"
        ) from None

    issued = time.time()
    await do_halt(gbus, "workflow", goal_id, "suspicious spend", "user:test")
    await eventually(lambda: _async(model.active() == 0), timeout=5, every=0.01)
    cancelled_within = max(r["end"] for r in model.requests) - issued
    assert cancelled_within < 1.0, f"in-flight calls ran on for {cancelled_within:.2f}s after the halt"
    assert all(r["end"] - r["start"] < SLOW_MS / 1000 for r in model.requests), "both calls were cut short"

    await asyncio.sleep(1.5)
    assert model.started_after(issued + 0.05) == [], "no model call starts while the workflow is halted"
    assert not any(isinstance(e.data, GoalCompleted | GoalFailed) for e in await goal_events(gbus, goal_id))

    await do_resume(gbus, "workflow", goal_id, "user:test")
    final = await _outcome(gbus, goal_id)
    assert isinstance(final.data, GoalCompleted), final.data
    events = await goal_events(gbus, goal_id)
    completed = [e.data for e in events if isinstance(e.data, TaskCompleted)]
    assert len(completed) == 2
    for task in completed:
        errors = [c.error or "" for c in task.usage.calls if not c.ok]
        assert any("halted by kill switch" in e for e in errors), task.usage.calls
        assert task.usage.calls[-1].ok
    audit = [e.data for e in await _control_events(gbus)]
    assert any(isinstance(a, HaltRequested) and a.target == goal_id and a.reason == "suspicious spend" for a in audit)
    assert any(isinstance(a, ResumeRequested) and a.target == goal_id for a in audit)


async def _outcome(bus: Bus, goal_id: str) -> Event[Any]:
    found: list[Event[Any]] = []

    async def done() -> bool:
        found[:] = [e for e in await goal_events(bus, goal_id) if isinstance(e.data, GoalCompleted | GoalFailed)]
        return bool(found)

    await eventually(done, timeout=30, every=0.2)
    return found[0]


async def _control_events(bus: Bus) -> list[Event[Any]]:
    sub = await bus.js.pull_subscribe("agentos.*.control.*", stream="AGENTOS_EVENTS")
    try:
        msgs = await sub.fetch(100, timeout=2)
    finally:
        await sub.unsubscribe()
    return [await bus.decode(m.data, m.headers) for m in msgs]
