"""The LLM planner's model calls are decided by the real policy service first (agent ``planner``),
their budget reservations are settled with the real cost, and a denial ends the goal with the
reason before any model call is made.

Runs the policy service and the orchestrator in-process on an embedded NATS of this module's own
(so no other test's goals are planned), the session's Postgres, and the offline model behind a
recorder of every chat request it receives."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedNats
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import eventually, unique
from agentos_policy.model import default_policy_dir
from agentos_policy.simulate import read_log
from agentos_schemas import Event, EventData, new_event_id
from agentos_schemas.charter import Charter
from agentos_schemas.events import AgentAnnounced, GoalFailed, GoalPlanned, GoalSubmitted
from agentos_schemas.events.policy import BudgetSettled, PolicyDecided
from agentos_schemas.subjects import parse_type

from tests.governance.conftest import read_body

PLAN = {"steps": [{"step_id": "echo", "capability": "echo", "instruction": "Repeat the goal back."}]}
SCENARIO = {
    "models": ["offline-fast", "offline-smart"],
    "rules": [{"name": "planner", "match": {"agent": "planner"}, "respond": {"json": PLAN}}],
}


class Recorder:
    """ASGI middleware in front of the offline model: keeps the body of every chat request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        body, replay = await read_body(receive)
        self.bodies.append(body.decode())
        await self.app(scope, replay, send)

    def saw(self, text: str) -> bool:
        return any(text in body for body in self.bodies)


@dataclass
class Setup:
    bus: Bus
    model: Recorder
    services: list[ServiceContext]
    settings: KernelSettings


def write_policy(folder: Path) -> None:
    """The shipped policy, plus two restrictions for the tenants of the denial tests."""
    shutil.copytree(default_policy_dir(), folder)
    policy = yaml.safe_load((folder / "policy.yaml").read_text())
    policy["version"] = "planner-test"
    policy["agents"]["planner"]["tenants"] = ["ok*", "broke*"]  # "banned…" tenants get no planner
    policy["budgets"].append({"scope": "tenant", "tenant": "broke*", "period": "day", "usd": 0.0})
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy))


@pytest.fixture(scope="module")
async def planner_setup(settings: KernelSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    import agentos_offline_model.server as server
    from agentos_offline_model import OfflineModelServer, Scenario
    from agentos_orchestrator import service as orchestrator
    from agentos_policy import service as policy

    root = tmp_path_factory.mktemp("planner-policy")
    write_policy(root / "policy")
    recorders: list[Recorder] = []
    services: list[ServiceContext] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            server,
            "build_app",
            lambda scenario, build=server.build_app: recorders.append(Recorder(build(scenario))) or recorders[-1],
        )
        model = OfflineModelServer(Scenario.model_validate(SCENARIO)).start()
        nats = EmbeddedNats(root / "nats", sync="default")
        url = nats.start()
        for key, value in {
            "AGENTOS_OFFLINE_MODEL_URL": model.url,
            "AGENTOS_ALLOW_LLM_CALLS": "0",
            "AGENTOS_POLICY_DIR": root / "policy",
            "AGENTOS_STATE_DIR": root,
        }.items():
            mp.setenv(key, str(value))
        own = KernelSettings(nats_url=url, database_url=settings.database_url, state_dir=root, publish_timeout_s=20)
        bus = await Bus.connect(own, source="planner-policy-test")
        await bus.provision()
        try:
            services.append(await start_service("policy", policy.setup, own, database=True))
            services.append(await start_service("orchestrator", orchestrator.setup, own))
            yield Setup(bus, recorders[-1], services, own)
        finally:
            for ctx in reversed(services):
                await stop_service(ctx, timeout=3)
            await bus.close()
            nats.stop()
            await asyncio.to_thread(model.stop)


async def submit(bus: Bus, tenant: str, text: str) -> str:
    """Announce an ``echo`` specialist for ``tenant`` (the planner plans with its capability), then submit."""
    charter = Charter(name="echo", capabilities=("echo",), model="fast")
    await bus.publish(
        bus.new(
            AgentAnnounced(
                agent="echo", version="1", capabilities=("echo",), instance="i1", capacity=1, charter=charter
            ),
            tenant=tenant,
        )
    )
    goal_id = new_event_id()
    await bus.publish(
        bus.new(
            GoalSubmitted(goal_id=goal_id, text=text),
            tenant=tenant,
            correlationid=goal_id,
            subject=f"goal/{goal_id}",
            id=goal_id,
        )
    )
    return goal_id


async def logged(bus: Bus, tenant: str, cls: type[EventData]) -> list[Event[Any]]:
    domain, name, _ = parse_type(cls.ce_type())
    return [e async for e in read_log(bus, f"agentos.{tenant}.{domain}.{name}")]


async def first(bus: Bus, tenant: str, cls: type[EventData], timeout: float = 30.0) -> Any:
    found: list[Event[Any]] = []

    async def there() -> bool:
        found[:] = await logged(bus, tenant, cls)
        return bool(found)

    await eventually(there, timeout=timeout, every=0.2)
    return found[0].data


async def test_planner_call_is_allowed_reserved_and_settled(planner_setup: Setup) -> None:
    bus, tenant = planner_setup.bus, unique("ok")
    text = f"Plan something harmless {tenant}"
    goal_id = await submit(bus, tenant, text)
    plan: GoalPlanned = await first(bus, tenant, GoalPlanned)
    assert plan.goal_id == goal_id and plan.planner == "llm:smart" and [s.step_id for s in plan.steps] == ["echo"]
    assert planner_setup.model.saw(text)

    (decided,) = [e.data for e in await logged(bus, tenant, PolicyDecided)]
    assert decided.request.agent == "planner" and decided.request.principal == "agent:planner"
    assert decided.request.action == "model_call" and decided.request.goal_id == goal_id
    assert decided.decision == "allow" and decided.policy_version == "planner-test"
    assert decided.reservation_id and decided.request.estimated_cost_usd > 0

    settled: BudgetSettled = await first(bus, tenant, BudgetSettled)
    assert settled.reservation_id == decided.reservation_id and settled.agent == "planner"
    assert settled.goal_id == goal_id
    real = sum(c.cost_usd for c in plan.usage.calls)
    assert real > 0 and settled.cost_usd == pytest.approx(real)
    assert settled.estimated_usd == pytest.approx(decided.request.estimated_cost_usd)
    assert settled.cost_usd < settled.estimated_usd  # the reservation bounded the call from above


@pytest.mark.parametrize(
    ("prefix", "code", "why"),
    [
        ("broke", "budget", "(budget, policy planner-test"),
        ("banned", "planner_failed", "(not_allowed, policy planner-test"),
    ],
)
async def test_a_denied_planner_call_fails_the_goal_before_any_model_call(
    planner_setup: Setup, prefix: str, code: str, why: str
) -> None:
    bus, tenant = planner_setup.bus, unique(prefix)
    text = f"Plan something {tenant}"
    goal_id = await submit(bus, tenant, text)
    failed: GoalFailed = await first(bus, tenant, GoalFailed)
    assert failed.goal_id == goal_id and failed.code == code
    assert "policy denied the planner's model call" in failed.reason and why in failed.reason
    (decided,) = [e.data for e in await logged(bus, tenant, PolicyDecided)]
    assert decided.request.agent == "planner" and decided.decision == "deny"
    assert decided.decision_id in failed.reason  # the goal's end names the decision that caused it
    assert not await logged(bus, tenant, GoalPlanned)
    assert not await logged(bus, tenant, BudgetSettled)
    await asyncio.sleep(0.5)
    assert not planner_setup.model.saw(text), "the model must not be called for a denied plan"


async def test_the_planner_waits_out_a_restarting_policy_service(planner_setup: Setup) -> None:
    """With the policy service gone for longer than a decision may take (2 s), the planner asks
    again with backoff, as tasks do, and plans once the service is back, instead of failing the goal."""
    from agentos_policy import service as policy

    bus, tenant = planner_setup.bus, unique("ok")
    services = planner_setup.services
    await stop_service(services[0], timeout=3)  # the policy service restarts ...
    try:
        goal_id = await submit(bus, tenant, f"Plan through a policy restart {tenant}")

        async def asked() -> bool:  # ... while the planner asks (and is answered by no one)
            return any(d.data.code == "unreachable" for d in await logged(bus, tenant, PolicyDecided))

        await eventually(asked, timeout=20, every=0.2)
        await asyncio.sleep(2.5)
    finally:
        services[0] = await start_service("policy", policy.setup, planner_setup.settings, database=True)
    plan: GoalPlanned = await first(bus, tenant, GoalPlanned, timeout=30)
    assert plan.goal_id == goal_id and [s.step_id for s in plan.steps] == ["echo"]
    assert not await logged(bus, tenant, GoalFailed)
    decided = [e.data for e in await logged(bus, tenant, PolicyDecided)]
    assert [d.decision for d in decided if d.code != "unreachable"] == ["allow"]
    assert all("policy service unreachable" in d.reasons[0] for d in decided if d.code == "unreachable")
