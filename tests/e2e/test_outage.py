"""A Postgres outage pauses goals instead of failing them: the runtime's own embedded Postgres is
stopped for real for 10 s while goals run, then started again; the goals complete with no attempt
spent on the outage, and the denials during it say what was unavailable."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentos_cli import registry
from agentos_cli.goals import submit
from agentos_cli.main import wait_for_services
from agentos_cli.supervisor import Runtime
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.testing import eventually, unique
from agentos_schemas.events import GoalCompleted, GoalPlanned, Limits, TaskAssigned, TaskFailed, TaskStarted
from agentos_schemas.events.policy import PolicyDecided

from tests.e2e import conftest
from tests.e2e.conftest import charters_dir, goal_events, outcome, scenario_file
from tests.e2e.test_goal_execution import SEED, of

OUTAGE_S = 10.0


@pytest.fixture(scope="module")
async def runtime() -> AsyncIterator[Runtime]:
    """A runtime with an embedded Postgres of its own (the session's one is not stopped); its state
    directory is made as the session's servers' is (the Postgres user must be able to reach it)."""
    state = Path(tempfile.mkdtemp(prefix="agentos-outage-"))
    env = {
        "AGENTOS_CHARTERS_DIR": str(charters_dir(state)),
        "AGENTOS_OFFLINE_SCENARIO": str(scenario_file(state)),
        "AGENTOS_TASK_ACK_WAIT_S": "4",
        "AGENTOS_ALLOW_LLM_CALLS": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    rt = Runtime(KernelSettings(state_dir=state, nats_sync="default"), registry.available(), logs=state / "logs")
    conftest._RUNTIMES.append(rt)
    try:
        resolved = await rt.start()
        assert rt.pg is not None, "the runtime runs its own Postgres"
        bus = await Bus.connect(resolved, source="e2e")
        await wait_for_services(bus, rt.services)
        await bus.close()
        yield rt
    finally:
        await rt.stop()
        conftest._RUNTIMES.remove(rt)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(state, ignore_errors=True)


async def test_goals_running_through_a_postgres_outage_complete(runtime: Runtime, rbus: Bus) -> None:
    """One goal is at work when Postgres stops, another is submitted (and planned) during the outage."""
    limits = Limits(max_retries=1, max_replans=1, deadline_s=300)
    goals = [(await submit(rbus, SEED, tenant=unique("pgdown"), limits=limits)).data.goal_id]

    async def working() -> bool:
        return any(isinstance(e.data, TaskStarted) for e in await goal_events(rbus, goals[0]))

    await eventually(working, timeout=60, every=0.2)
    assert runtime.pg is not None
    url = runtime.settings.database_url
    await asyncio.to_thread(runtime.pg.stop)
    try:
        goals.append((await submit(rbus, SEED, tenant=unique("pgdown"), limits=limits)).data.goal_id)
        await asyncio.sleep(OUTAGE_S)
    finally:
        assert await asyncio.to_thread(runtime.pg.start) == url

    denials: list[PolicyDecided] = []
    for goal_id in goals:
        final, events = await outcome(rbus, goal_id, timeout=240)
        assert isinstance(final.data, GoalCompleted), final.data
        assert len(of(events, GoalPlanned)) == 1, "the outage caused no re-plan"
        spent = [f for f in of(events, TaskFailed) if f.code != "unavailable"]
        assert spent == [], "no attempt was spent on the outage"
        attempts = [a.attempt for a in of(events, TaskAssigned) if a.review_of is None]
        assert max(attempts) <= 1 + limits.max_retries
        denials += [d for d in of(events, PolicyDecided) if d.decision == "deny"]
    assert denials, "the planner's model call was asked for during the outage"
    assert all(d.code == "unavailable" for d in denials), [(d.code, d.reasons) for d in denials]
    assert all("policy store (Postgres) unavailable" in d.reasons[0] for d in denials)
