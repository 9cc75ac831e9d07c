"""The policy store (Postgres) stopped for real under a running policy service: decisions that need
it are denied with code ``unavailable`` naming the store (not a raw driver error), nothing is
remembered of them, and a caller waiting out the outage is allowed once Postgres is back.

The service runs on an embedded Postgres of this module's own, so the session's is never stopped."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedPostgres
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import eventually, unique
from agentos_policy.service import setup
from agentos_schemas.events.policy import PolicyDecided
from agentos_schemas.rpc import PolicyRequest

from tests.policy.conftest import STRICT, client, logged


@dataclass
class Outage:
    pg: EmbeddedPostgres
    policy: ServiceContext


@pytest.fixture(scope="module")
async def outage(settings: KernelSettings) -> AsyncIterator[Outage]:
    root = Path(tempfile.mkdtemp(prefix="agentos-policy-outage-"))
    pg = EmbeddedPostgres(root / "postgres")
    url = await asyncio.to_thread(pg.start)
    saved = os.environ.get("AGENTOS_POLICY_DIR")
    os.environ["AGENTOS_POLICY_DIR"] = str(STRICT)
    try:
        ctx = await start_service("policy", setup, settings.model_copy(update={"database_url": url}), database=True)
        try:
            yield Outage(pg, ctx)
        finally:
            await stop_service(ctx, timeout=3)
    finally:
        if saved is None:
            os.environ.pop("AGENTOS_POLICY_DIR", None)
        else:
            os.environ["AGENTOS_POLICY_DIR"] = saved
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(root, ignore_errors=True)


def model_call(tenant: str, call: str) -> PolicyRequest:
    return PolicyRequest(
        tenant=tenant,
        principal="agent:spender",
        agent="spender",
        action="model_call",
        resource="fast",
        goal_id="g",
        task_id="g/r0/s1/a1",
        call_id=call,
        estimated_cost_usd=0.001,
        estimated_tokens=100,
    )


async def test_a_stopped_policy_store_is_named_and_waited_out(bus: Bus, outage: Outage) -> None:
    tenant = unique("bud")  # a tenant with budget caps: a model call reserves in the store
    policy = client(bus, timeout_s=3.0, unavailable_backoff_max_s=0.5)
    before = await policy.decide(model_call(tenant, "c1"))
    assert before.decision == "allow" and before.reservation_id is not None
    url = outage.policy.settings.database_url
    await asyncio.to_thread(outage.pg.stop)
    try:
        down = await policy.decide(model_call(tenant, "c2"))
        assert (down.decision, down.code) == ("deny", "unavailable")
        assert down.reasons[0].startswith("policy store (Postgres) unavailable"), down.reasons
        assert down.reservation_id is None
        waiting = asyncio.create_task(policy.decide_and_wait(model_call(tenant, "c3"), unavailable_wait_s=60))
        await asyncio.sleep(3.0)
        assert not waiting.done(), "the caller waits the outage out instead of taking the denial"
    finally:
        assert await asyncio.to_thread(outage.pg.start) == url
    after = await asyncio.wait_for(waiting, 30)
    assert after.decision == "allow" and after.reservation_id is not None, after
    decided: list[PolicyDecided] = []

    async def answered() -> bool:  # decisions are published after the reply
        decided[:] = await logged(bus, tenant, PolicyDecided)
        return any(d.decision_id == after.decision_id for d in decided)

    await eventually(answered, timeout=10)
    unavailable = [d for d in decided if d.code == "unavailable"]
    assert len(unavailable) >= 2 and all("policy store (Postgres) unavailable" in d.reasons[0] for d in unavailable)
    assert [d.request.call_id for d in decided if d.decision == "allow"] == ["c1", "c3"]
