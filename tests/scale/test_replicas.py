"""Replicas: 1, 2 and 3 of every service that keeps state complete the same goals, each exactly once.

Each case runs its own auth-on NATS (every service instance connects as its own least-privilege
user, on its own connection) and the session's Postgres, with N in-process instances each of the
orchestrator, context-manager, specialist, memory, policy and audit sharing their durables, and the
offline model behind a request recorder. It submits the demo goal several times (LLM planner,
parallel research with tools, a QA rejection and redo, a writer, memory proposals and commits) and
then counts from the log: every goal completed once; no task assigned, started or completed twice;
every model request the model received is a call recorded once in the log (a plan or task run twice
would leave a request the log does not account for); no memory entry proposed or decided twice,
each distinct finding committed once and the same finding from another goal refused as a duplicate;
the orchestrators' partitions held once each; and ``audit verify`` passes over the whole log.

The long variant (more goals at once) runs with ``AGENTOS_TEST_LONG=1``.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats.errors
import pytest
from agentos_cli.goals import submit
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedNats
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import eventually, unique
from agentos_schemas import EVENTS_STREAM, Event, codec
from agentos_schemas.events import (
    GoalCompleted,
    GoalFailed,
    GoalPlanned,
    MemoryCommitted,
    MemoryProposed,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
)
from nats.js import api
from pydantic import SecretStr

from tests.governance.conftest import Recorder

SEED = "Research our three main competitors and draft a summary report"
#: Start order: the decision point and the stores first, the orchestrators last.
ORDER = ("policy", "memory", "audit", "context-manager", "specialist", "orchestrator")
DATABASE = {"policy", "memory", "audit"}
LONG = pytest.mark.skipif(not os.environ.get("AGENTOS_TEST_LONG"), reason="long variant: AGENTOS_TEST_LONG=1")


@dataclass
class Fleet:
    nats: EmbeddedNats
    model: Recorder
    bus: Bus
    pool: asyncpg.Pool
    schema: str
    state: Path
    services: list[ServiceContext] = field(default_factory=list)

    def of(self, name: str) -> list[ServiceContext]:
        return [c for c in self.services if c.name == name]


def _modules() -> dict[str, Any]:
    from agentos_audit import service as audit
    from agentos_context_manager import service as context_manager
    from agentos_memory import service as memory
    from agentos_orchestrator import service as orchestrator
    from agentos_policy import service as policy
    from agentos_specialist import service as specialist

    return {
        "policy": policy,
        "memory": memory,
        "audit": audit,
        "context-manager": context_manager,
        "specialist": specialist,
        "orchestrator": orchestrator,
    }


async def start_fleet(root: Path, db_url: str, replicas: int, mp: pytest.MonkeyPatch) -> Fleet:
    import agentos_offline_model.server as server
    from agentos_offline_model import OfflineModelServer, Scenario

    recorders: list[Recorder] = []
    mp.setattr(
        server,
        "build_app",
        lambda scenario, build=server.build_app: recorders.append(Recorder(build(scenario))) or recorders[-1],
    )
    demo = Path(server.__file__).parent / "scenarios" / "demo.yaml"
    model = OfflineModelServer(Scenario.load(str(demo))).start()
    schema = unique("audit_r")
    env = {
        "AGENTOS_OFFLINE_MODEL_URL": model.url,
        "AGENTOS_ALLOW_LLM_CALLS": "0",
        "AGENTOS_STATE_DIR": root,
        "AGENTOS_SECRETS_DIR": root / "secrets",
        "AGENTOS_AUDIT_SCHEMA_NAME": schema,
        "AGENTOS_OWNERSHIP_EVERY_S": "0.5",
        "AGENTOS_TASK_ACK_WAIT_S": "10",
    }
    for key, value in env.items():
        mp.setenv(key, str(value))
    nats_server = EmbeddedNats(root / "nats", sync="default", auth=True)
    url = nats_server.start()
    admin = KernelSettings(
        nats_url=url,
        database_url=db_url,
        state_dir=root,
        publish_timeout_s=10,
        nats_user="admin",
        nats_password=SecretStr(nats_server.credentials["admin"]["password"]),
    )
    bus = await Bus.connect(admin, source="replica-test")
    await bus.provision()
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    assert pool is not None
    fleet = Fleet(nats_server, recorders[-1], bus, pool, schema, root)
    modules = _modules()
    for name in ORDER:
        own = admin.model_copy(
            update={
                "nats_user": name,
                "provision": "off",
                "nats_password": SecretStr(nats_server.credentials[name]["password"]),
            }
        )
        started = await asyncio.gather(
            *(start_service(name, modules[name].setup, own, database=name in DATABASE) for _ in range(replicas))
        )  # at once, as a deployment starts them
        fleet.services.extend(started)
    fleet.model_stop = model.stop  # type: ignore[attr-defined]
    return fleet


async def stop_fleet(fleet: Fleet) -> None:
    for ctx in reversed(fleet.services):
        await stop_service(ctx, timeout=3)
    await fleet.bus.close()
    await fleet.pool.close()
    fleet.nats.stop()
    await asyncio.to_thread(fleet.model_stop)  # type: ignore[attr-defined]


@pytest.fixture
async def fleet_factory(servers: tuple[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    fleets: list[Fleet] = []
    with pytest.MonkeyPatch.context() as mp:

        async def make(replicas: int) -> Fleet:
            fleets.append(await start_fleet(tmp_path, servers[1], replicas, mp))
            return fleets[-1]

        try:
            yield make
        finally:
            for fleet in fleets:
                await stop_fleet(fleet)


async def log_events(bus: Bus, tenant: str) -> list[Event[Any]]:
    """Every stored event of ``tenant``, in log order."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    psub = await bus.js.pull_subscribe(
        subject="",
        stream=EVENTS_STREAM,
        config=api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, filter_subjects=[f"agentos.{tenant}.>"], mem_storage=True
        ),
    )
    out: list[Event[Any]] = []
    try:
        while True:
            try:
                msgs = await psub.fetch(512, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for msg in msgs:
                try:
                    out.append(await bus.decode(msg.data, msg.headers))
                except codec.DecodeError:
                    continue
            if msgs[-1].metadata.sequence.stream >= info.state.last_seq or msgs[-1].metadata.num_pending == 0:
                break
    finally:
        await psub.unsubscribe()
    return out


def of(events: list[Event[Any]], cls: type[Any]) -> list[Any]:
    return [e.data for e in events if isinstance(e.data, cls)]


def once(values: list[str], what: str) -> None:
    counts = Counter(values)
    assert counts, f"no {what} at all"
    twice = [(k, n) for k, n in counts.items() if n > 1]
    assert not twice, f"{what} more than once: {twice[:3]}"


async def submit_goals(fleet: Fleet, goals: int) -> tuple[str, list[str]]:
    tenant = unique("scale")
    return tenant, [(await submit(fleet.bus, SEED, tenant=tenant)).data.goal_id for _ in range(goals)]


async def run_goals(
    fleet: Fleet,
    goals: int,
    timeout: float,
    submitted: tuple[str, list[str]] | None = None,
) -> tuple[str, list[Event[Any]], list[str]]:
    tenant, ids = submitted or await submit_goals(fleet, goals)
    events: list[Event[Any]] = []

    async def all_ended() -> bool:
        events[:] = await log_events(fleet.bus, tenant)
        ended = {d.goal_id for d in of(events, GoalCompleted) + of(events, GoalFailed)}
        return set(ids) <= ended

    try:
        await eventually(all_ended, timeout=timeout, every=1.0)
    except AssertionError:
        ended = {d.goal_id for d in of(events, GoalCompleted) + of(events, GoalFailed)}
        stuck = [i for i in ids if i not in ended]
        seen = Counter(".".join(e.type.split(".")[2:4]) for e in events)
        raise AssertionError(f"{len(stuck)} of {goals} goals did not end within {timeout:.0f}s ({seen})") from None
    return tenant, events, ids


def check_exactly_once(fleet: Fleet, events: list[Event[Any]], ids: list[str]) -> None:
    completed = of(events, GoalCompleted)
    assert not of(events, GoalFailed), [f.reason for f in of(events, GoalFailed)]
    assert sorted(d.goal_id for d in completed) == sorted(ids), "every goal completed, once"
    for cls in (TaskAssigned, TaskStarted, TaskCompleted):
        once([d.task_id for d in of(events, cls)], cls.__name__)
    once([f"{d.goal_id}/{d.revision}" for d in of(events, GoalPlanned)], "a plan revision")
    once([d.entry_id for d in of(events, MemoryProposed)], "a memory proposal")
    proposed = [d.entry_id for d in of(events, MemoryProposed)]
    assert len(proposed) == 3 * len(ids), "each goal's three findings proposed"
    decided = [i for d in of(events, MemoryCommitted) for i in d.entry_ids]  # with working-memory entries
    once(decided, "a memory decision")
    assert set(proposed) <= set(decided), "every proposal committed or refused"
    # The goals are the same, so are their findings: the first of each is committed, the same
    # finding from another goal is refused as its duplicate (never stored twice).
    committed = [
        i for d in of(events, MemoryCommitted) if d.status == "committed" for i in d.entry_ids if i in proposed
    ]
    refused = [d for d in of(events, MemoryCommitted) if d.status == "rejected" and set(d.entry_ids) & set(proposed)]
    assert len(committed) == 3, "each distinct finding committed once"
    assert all(d.reason.startswith("duplicate") for d in refused), [d.reason for d in refused]
    # Every request the model received is a call recorded once in the log: a plan or a task run
    # twice would have asked the model again. (A call that failed may not have reached it.)
    calls = [
        c for d in of(events, GoalPlanned) + of(events, TaskCompleted) + of(events, TaskFailed) for c in d.usage.calls
    ]
    failed = [c.error for c in calls if not c.ok]
    received = len(fleet.model.requests)
    assert len(calls) - len(failed) <= received <= len(calls), (received, len(calls), failed)


async def check_audit(fleet: Fleet) -> None:
    from agentos_audit.settings import AuditSettings
    from agentos_audit.signing import load_public, public_path
    from agentos_audit.verify import verify

    last = (await fleet.bus.js.stream_info(EVENTS_STREAM)).state.last_seq

    async def projected() -> bool:
        head = await fleet.pool.fetchval(f"SELECT coalesce(max(seq), 0) FROM {fleet.schema}.chain")
        return bool(head >= last)

    await eventually(projected, timeout=30, every=0.5)
    public = load_public(public_path(AuditSettings().key_path(fleet.state)))
    report = await verify(fleet.bus, fleet.pool, fleet.schema, public)
    assert report.ok, [d for d in report.divergences][:3]
    assert report.head_seq >= last


async def check_partitions(fleet: Fleet) -> None:
    from agentos_orchestrator.service import PARTITIONS

    replicas = fleet.of("orchestrator")

    async def split_once() -> bool:  # each held by one replica, and (with replicas) not all by one
        held = [p for ctx in replicas for p in ctx.status.get("partitions_held", ())]
        holders = sum(1 for ctx in replicas if ctx.status.get("partitions_held"))
        return sorted(held) == list(range(PARTITIONS)) and holders >= min(len(replicas), 2)

    await eventually(split_once, timeout=15, every=0.25)


async def scenario(fleet_factory: Any, replicas: int, goals: int, timeout: float) -> None:
    fleet = await fleet_factory(replicas)
    await check_partitions(fleet)
    _, events, ids = await run_goals(fleet, goals, timeout)
    check_exactly_once(fleet, events, ids)
    await check_partitions(fleet)
    await check_audit(fleet)


@pytest.mark.parametrize("replicas", [1, 2, 3])
async def test_replicas_complete_every_goal_once(fleet_factory: Any, replicas: int) -> None:
    await scenario(fleet_factory, replicas, goals=3, timeout=90)


@LONG
@pytest.mark.long
@pytest.mark.timeout(900)
@pytest.mark.parametrize("replicas", [2, 3])
async def test_replicas_complete_many_goals_once(fleet_factory: Any, replicas: int) -> None:
    await scenario(fleet_factory, replicas, goals=12, timeout=400)


def orchestrator_of(ctx: ServiceContext) -> Any:
    from agentos_orchestrator.service import Orchestrator

    return next(c.__self__ for c in ctx.closers if isinstance(getattr(c, "__self__", None), Orchestrator))


async def crash(fleet: Fleet, ctx: ServiceContext) -> None:
    """The replica dies: it stops deciding and renewing its leases, and gives nothing back."""
    orchestrator = orchestrator_of(ctx)
    for task in [orchestrator._decider, orchestrator.ownership._task, *orchestrator.planning.values()]:
        if task is not None:
            task.cancel()
    await orchestrator.follower.stop()
    await ctx.bus.nc.close()
    fleet.services.remove(ctx)


async def test_an_orchestrator_replica_that_dies_mid_goal_leaves_its_goals_to_the_other(fleet_factory: Any) -> None:
    fleet = await fleet_factory(2)
    await check_partitions(fleet)
    tenant, ids = await submit_goals(fleet, 3)

    async def planned_and_working() -> bool:
        events = await log_events(fleet.bus, tenant)
        return {d.goal_id for d in of(events, GoalPlanned)} == set(ids) and bool(of(events, TaskStarted))

    await eventually(planned_and_working, timeout=60, every=0.2)
    victim = next(c for c in fleet.of("orchestrator") if orchestrator_of(c).ownership.owns(ids[0]))
    await crash(fleet, victim)
    ended = {d.goal_id for d in of(await log_events(fleet.bus, tenant), GoalCompleted)}
    assert ids[0] not in ended, "the dead replica's goal was still running"
    _, events, _ = await run_goals(fleet, len(ids), timeout=90, submitted=(tenant, ids))
    check_exactly_once(fleet, events, ids)
    await check_partitions(fleet)
    await check_audit(fleet)
