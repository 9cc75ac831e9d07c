"""A whole runtime (the end-to-end one) and one demo goal recorded on it, for the replay tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from agentos_cli.goals import submit
from agentos_cli.supervisor import Runtime
from agentos_kernel import Bus
from agentos_kernel.testing import unique
from agentos_schemas import Event
from agentos_schemas.events import GoalCompleted

from tests.e2e.conftest import outcome, runtime, runtime_env  # noqa: F401 - the whole-runtime fixture

SEED = "Research our three main competitors and draft a summary report"


@dataclass
class Recorded:
    goal_id: str
    tenant: str
    events: list[Event[Any]]


@pytest.fixture(scope="module")
async def recorded(runtime: Runtime) -> AsyncIterator[Recorded]:  # noqa: F811
    """The demo goal, run to completion on the runtime: the recording the replays start from."""
    bus = await Bus.connect(runtime.settings, source="replay-test")
    try:
        tenant = unique("rec")
        goal = await submit(bus, SEED, tenant=tenant)
        final, events = await outcome(bus, goal.data.goal_id, timeout=180)
        assert isinstance(final.data, GoalCompleted), final.data
        yield Recorded(goal.data.goal_id, tenant, events)
    finally:
        await bus.close()
