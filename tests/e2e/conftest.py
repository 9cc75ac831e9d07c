"""A whole AgentOS runtime for end-to-end tests: its own embedded NATS, the session's Postgres,
the offline model over HTTP playing the demo scenario plus fault rules, and every service as a
supervised child process (so tests can kill one)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import nats.errors
import pytest
import yaml
from agentos_cli import registry
from agentos_cli.main import wait_for_services
from agentos_cli.supervisor import Runtime
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.testing import eventually
from agentos_schemas import EVENTS_STREAM, Event, codec
from agentos_schemas.events import GoalCompleted, GoalFailed
from agentos_specialist.service import default_charters_dir
from nats.js import api

HERE = Path(__file__).parent
_RUNTIMES: list[Runtime] = []
DEMO_SCENARIO = Path(str(resources.files("agentos_offline_model") / "scenarios" / "demo.yaml"))


def scenario_file(folder: Path) -> Path:
    """The demo scenario with the fault rules of these tests in front of it."""
    faults = yaml.safe_load((HERE / "fault_rules.yaml").read_text())
    demo = yaml.safe_load(DEMO_SCENARIO.read_text())
    merged = {
        "models": sorted({*demo.get("models", []), *faults.get("models", [])}),
        "timeout_s": 5,
        "rules": faults["rules"] + demo["rules"],
    }
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return path


def charters_dir(folder: Path) -> Path:
    target = folder / "charters"
    shutil.copytree(default_charters_dir(), target)
    for extra in (HERE / "charters").glob("*.md"):
        shutil.copy(extra, target / extra.name)
    return target


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Extra environment for the module's runtime (a module overrides this fixture to add some)."""
    return {}


@pytest.fixture(scope="module")
async def runtime(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, runtime_env: dict[str, str]
) -> AsyncIterator[Runtime]:
    state = tmp_path_factory.mktemp("runtime")
    env = {
        "AGENTOS_CHARTERS_DIR": str(charters_dir(state)),
        "AGENTOS_OFFLINE_SCENARIO": str(scenario_file(state)),
        "AGENTOS_TASK_ACK_WAIT_S": "4",
        "AGENTOS_ALLOW_LLM_CALLS": "0",
        **runtime_env,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = KernelSettings(database_url=servers[1], state_dir=state, nats_sync="default")
    rt = Runtime(settings, registry.available(), logs=state / "logs")
    _RUNTIMES.append(rt)
    try:
        resolved = await rt.start()
        bus = await Bus.connect(resolved, source="e2e")
        await wait_for_services(bus, rt.services)
        await bus.close()
        yield rt
    finally:
        await rt.stop()
        _RUNTIMES.remove(rt)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
async def rbus(runtime: Runtime) -> AsyncIterator[Bus]:
    bus = await Bus.connect(runtime.settings, source="e2e-test")
    yield bus
    await bus.close()


async def goal_events(bus: Bus, goal_id: str) -> list[Event[Any]]:
    """Every stored event of one goal, in log order."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    sub = await bus.js.subscribe(
        "agentos.>",
        stream=EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.BY_START_TIME,
        config=api.ConsumerConfig(opt_start_time=start.isoformat()),
    )
    info = await bus.js.stream_info(EVENTS_STREAM)
    out: list[Event[Any]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            try:
                event = await bus.decode(msg.data, msg.headers)
            except codec.DecodeError:
                continue
            if event.correlationid == goal_id:
                out.append(event)
            if msg.metadata.sequence.stream >= info.state.last_seq:
                break
    finally:
        await sub.unsubscribe()
    return out


async def outcome(bus: Bus, goal_id: str, timeout: float = 90.0) -> tuple[Event[Any], list[Event[Any]]]:
    found: list[list[Event[Any]]] = []

    async def finished() -> bool:
        events = await goal_events(bus, goal_id)
        found[:] = [events]
        return any(isinstance(e.data, GoalCompleted | GoalFailed) for e in events)

    try:
        await eventually(finished, timeout=timeout, every=0.5)
    except AssertionError:
        seen = [f"{e.type} {getattr(e.data, 'task_id', '') or ''}" for e in (found[0] if found else [])]
        raise AssertionError(f"goal {goal_id} did not finish within {timeout}s; its events: {seen}") from None
    events = found[0]
    return next(e for e in events if isinstance(e.data, GoalCompleted | GoalFailed)), events


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failed end-to-end test, attach the tail of every service's log to the report."""
    report = yield
    rt = _RUNTIMES[-1] if _RUNTIMES else None
    if report.when == "call" and report.failed and rt is not None and rt.logs is not None:
        for log in sorted(rt.logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-40:]
            report.sections.append((f"service log {log.name}", "\n".join(tail)))
    return report
