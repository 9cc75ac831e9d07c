"""Fail closed: with no policy service the client denies within its timeout (and logs the attempt);
a service without a valid policy denies everything ("no policy loaded").

No module-scoped policy service runs here (other modules' fixtures are torn down before this one)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agentos_kernel import Bus, KernelSettings
from agentos_kernel.policy import PolicyClient, PolicyClientSettings
from agentos_kernel.service import start_service, stop_service
from agentos_kernel.testing import eventually, unique
from agentos_policy.service import setup
from agentos_schemas.events.policy import PolicyDecided
from agentos_schemas.rpc import PolicyRequest
from agentos_specialist.runner import Progress, run_agent
from agentos_specialist.tools import ToolContext

from tests.policy.conftest import ScriptedLLM, charter, client, context_event, logged, no_snapshot


async def test_no_policy_service_means_deny(bus: Bus, tenant: str) -> None:
    request = PolicyRequest(
        tenant=tenant,
        principal="agent:research",
        agent="research",
        action="tool_call",
        resource="search_documents",
        tool="search_documents",
        goal_id="g",
    )
    started = time.monotonic()
    decision = await client(bus, timeout_s=0.5).decide(request)
    assert time.monotonic() - started < 1.5
    assert (decision.decision, decision.code) == ("deny", "unreachable")
    assert decision.reasons[0].startswith("policy service unreachable")

    async def recorded() -> bool:
        return any(d.decision_id == decision.decision_id for d in await logged(bus, tenant, PolicyDecided))

    await eventually(recorded, timeout=10)


async def test_agent_loop_waits_out_a_missing_policy_then_fails_the_task_as_unavailable(bus: Bus, tenant: str) -> None:
    """No policy service: the loop asks again with backoff for as long as the client waits out an
    outage, then ends the task ``unavailable`` (retried without counting as an attempt)."""
    shared = PolicyClient.for_bus(bus)  # the client run_agent uses
    saved = shared.settings
    shared.settings = PolicyClientSettings(timeout_s=0.3, unavailable_wait_s=1.5, unavailable_backoff_max_s=0.5)
    try:
        llm = ScriptedLLM([{"answer": "x"}])
        event = context_event(bus, tenant, "research", unique("g"), "task-1")
        started = time.monotonic()
        outcome = await run_agent(
            llm,
            charter("research"),
            Progress(messages=list(event.data.messages)),
            {},
            ToolContext(bus, event),
            no_snapshot,
        )
        waited = time.monotonic() - started
    finally:
        shared.settings = saved
    assert not outcome.ok and outcome.code == "unavailable" and outcome.retryable
    assert "policy service unreachable" in outcome.reason and llm.seen == [], "the model was never called"
    assert 1.5 <= waited < 5

    async def asked_again() -> bool:  # each ask the client answered alone is in the log
        return len([d for d in await logged(bus, tenant, PolicyDecided) if d.code == "unreachable"]) >= 3

    await eventually(asked_again, timeout=10)


async def test_invalid_policy_denies_everything(
    bus: Bus, settings: KernelSettings, tenant: str, tmp_path: Path
) -> None:
    (tmp_path / "policy.yaml").write_text("version: broken\nagents: {research: {clearance: secret}}\n")
    os.environ["AGENTOS_POLICY_DIR"] = str(tmp_path)
    try:
        ctx = await start_service("policy", setup, settings, database=True)
    finally:
        os.environ.pop("AGENTOS_POLICY_DIR")
    try:
        request = PolicyRequest(
            tenant=tenant, principal="agent:research", agent="research", action="model_call", resource="fast"
        )
        decision = await client(bus).decide(request)
        assert (decision.decision, decision.code, decision.reasons) == ("deny", "no_policy", ("no policy loaded",))
        assert decision.policy_version == "none"
    finally:
        await stop_service(ctx)
