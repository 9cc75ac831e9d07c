"""`agentos audit replay <goal-id>`: re-run a recorded goal in a sandbox and compare the outcomes.

The goal's events are read back from the log (``AGENTOS_EVENTS``, correlation id = goal id). The
same goal (text, workflow, inputs, limits) is then submitted to a **sandbox**: a separate runtime
started by this command on its own embedded NATS and Postgres (so nothing the replay does can reach
the original's log, memory, budgets or audit chain), under a sandbox tenant (``sandbox-<id>``,
never the original's). Its models are the shipped offline model server, playing either

* ``recorded`` — a scenario built from the recording (:func:`recorded_scenario`): every agent's
  request is answered with what that agent answered in the recording, keyed by agent, step,
  attempt and model turn, so the replay is deterministic; or
* ``offline`` — the offline model's scenario (``--scenario``, ``AGENTOS_OFFLINE_SCENARIO`` or the
  shipped demo), to see how the goal fares against another model.

The outcome is compared with the original's (:func:`compare`): final status, plan (step ids,
capabilities, dependencies, review flags per revision), per-step outputs and the final result
text, normalised (goal ids, tenants and UUIDs masked). See docs/replay.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from agentos_kernel import AgentOSError, Bus, KernelSettings
from agentos_kernel.runtime import resolve
from agentos_offline_model import Scenario
from agentos_schemas import Event, new_event_id
from agentos_schemas.events import GoalSubmitted
from agentos_schemas.subjects import NamingError, check_token
from rich.console import Console

from agentos_cli import output, registry
from agentos_cli.errors import fail
from agentos_cli.goals import follow
from agentos_cli.replay_compare import GoalSummary, ReplayReport, compare, render_report, summarize
from agentos_cli.replay_record import configured_aliases, read_goal_events, recorded_scenario, submitted_of
from agentos_cli.supervisor import Runtime

MODES = ("recorded", "offline")
#: What a sandbox runs: the services that execute a goal. No gateway (a sandbox takes no outside
#: traffic and fires no schedules) and no audit (the sandbox log is thrown away with it).
SANDBOX_SERVICES = ("orchestrator", "context-manager", "specialist", "memory", "policy")

console = output.console()
err = output.console(stderr=True)


# --- the sandbox ----------------------------------------------------------------------------------


class SandboxRuntime(Runtime):
    """A runtime whose children get the sandbox's model and outbox settings, and never the
    caller's model registry (so a recorded or offline replay cannot call a real model)."""

    def __init__(self, *args: Any, env: dict[str, str | None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env_overrides = env

    def _env(self, name: str) -> dict[str, str]:
        env = super()._env(name)
        for key, value in self.env_overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env


@contextlib.contextmanager
def _environ(changes: dict[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in changes}
    try:
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def _await_outcome(bus: Bus, goal_id: str, tenant: str, timeout: float) -> list[Event[Any]]:
    """The sandbox goal's events, once it completed or failed (or when ``timeout`` passed)."""
    return [e async for e in follow(bus, goal_id, subjects=f"agentos.{tenant}.>", timeout=timeout, from_start=True)]


def _sandbox_runtime(state: Path, console: Console | None) -> SandboxRuntime:
    """A runtime of the goal-executing services installed here, on its own embedded servers in
    ``state``, whose children see no model registry and no real model (``AGENTOS_ALLOW_LLM_CALLS=0``)."""
    services = [s for s in registry.available() if s in SANDBOX_SERVICES]
    settings = KernelSettings(
        nats_url=None,
        database_url=None,
        nats_user=None,
        nats_password=None,
        state_dir=state,
        nats_sync="default",
        tenant="default",
    )
    children: dict[str, str | None] = {
        "AGENTOS_MODELS": None,
        "AGENTOS_OFFLINE_SCENARIO": None,
        "AGENTOS_ALLOW_LLM_CALLS": "0",
        "AGENTOS_OUTBOX_DIR": str(state / "outbox"),
        "AGENTOS_TENANT": "default",
        "AGENTOS_NATS_INBOX_PREFIX": None,
    }
    return SandboxRuntime(settings, services, logs=state / "logs", console=console or err, env=children)


async def _submit_copy(bus: Bus, submitted: Event[GoalSubmitted], sandbox_tenant: str) -> str:
    """Publish the recorded goal again (text, workflow, inputs, limits) under a new goal id in the
    sandbox tenant; returns that goal id."""
    data = submitted.data
    goal_id = new_event_id()
    event = bus.new(
        GoalSubmitted(goal_id=goal_id, text=data.text, workflow=data.workflow, inputs=data.inputs, limits=data.limits),
        tenant=sandbox_tenant,
        subject=f"goal/{goal_id}",
        correlationid=goal_id,
        principal=submitted.principal or "user:replay",
    )
    event.extensions = submitted.extensions  # what its sender attached travels with the copy
    await bus.publish(event)
    return goal_id


async def run_in_sandbox(
    submitted: Event[GoalSubmitted],
    sandbox_tenant: str,
    scenario_file: Path,
    state: Path,
    timeout: float,
    console: Console | None = None,
) -> tuple[str, list[Event[Any]], dict[str, int]]:
    """Submit the recorded goal to a fresh runtime whose offline model plays ``scenario_file``;
    returns (sandbox goal id, its events, the scenario's per-rule match counts)."""
    from agentos_cli.main import wait_for_services  # main imports the audit commands, hence here

    runtime = _sandbox_runtime(state, console)
    try:
        # The runtime serves the scenario with the shipped offline model on a free port and points
        # every service's model registry at it (AGENTOS_OFFLINE_MODEL_URL).
        with _environ({"AGENTOS_MODELS": None, "AGENTOS_OFFLINE_SCENARIO": str(scenario_file)}):
            resolved = await runtime.start()
        bus = await Bus.connect(resolved, source="cli-replay")
        try:
            await wait_for_services(bus, runtime.services, timeout=120.0)
            goal_id = await _submit_copy(bus, submitted, sandbox_tenant)
            events = await _await_outcome(bus, goal_id, sandbox_tenant, timeout)
        finally:
            await bus.close()
        counts = runtime.offline.scenario.counts if runtime.offline is not None else {}
        return goal_id, events, counts
    finally:
        await runtime.stop()


def default_sandbox_tenant(goal_id: str) -> str:
    return f"sandbox-{re.sub(r'[^a-z0-9]', '', goal_id.lower())[-12:] or 'goal'}"


def _check_options(mode: str, scenario: Path | None, tenant: str | None, sandbox_tenant: str | None) -> None:
    """Raise :class:`AgentOSError` for options that cannot hold together."""
    if mode not in MODES:
        raise AgentOSError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if scenario is not None and mode != "offline":
        raise AgentOSError("--scenario is for --mode offline (recorded mode answers from the recording)")
    if scenario is not None and not scenario.is_file():
        raise AgentOSError(f"no scenario file at {scenario}")
    try:
        if tenant is not None:
            check_token("tenant", tenant)
        if sandbox_tenant is not None:
            check_token("sandbox tenant", sandbox_tenant)
    except NamingError as exc:
        raise AgentOSError(str(exc)) from None


async def _recording(settings: KernelSettings, goal_id: str, tenant: str | None) -> list[Event[Any]]:
    """The original goal's events from the log; an error if there are none."""
    if not settings.nats_url:
        raise AgentOSError("no AgentOS is running here: start one with `agentos up` (or set AGENTOS_NATS_URL)")
    bus = await Bus.connect(settings, source="cli-replay")
    try:
        events = await read_goal_events(bus, goal_id, tenant)
    finally:
        await bus.close()
    if not events:
        where = f" of tenant {tenant!r}" if tenant else ""
        raise AgentOSError(f"no goal {goal_id!r} in the event log{where}")
    return events


def _scenario(
    events: list[Event[Any]],
    mode: str,
    scenario: Path | None,
    state: Path,
) -> tuple[Path, list[dict[str, Any]]]:
    """The scenario file the sandbox's offline model plays, and the recorded rules (recorded mode)."""
    if mode != "recorded":
        offline = scenario or os.environ.get("AGENTOS_OFFLINE_SCENARIO")
        return (Path(offline) if offline else _shipped_scenario()), []
    recorded = recorded_scenario(events, configured_aliases())
    Scenario.model_validate(recorded)  # fails here, not in the sandbox's model server
    scenario_file = state / "recorded-scenario.yaml"
    scenario_file.write_text(yaml.safe_dump(recorded, sort_keys=False, allow_unicode=True))
    return scenario_file, recorded["rules"]


def _finished_original(events: list[Event[Any]], goal_id: str) -> tuple[Event[GoalSubmitted], GoalSummary]:
    """The recorded goal's submission and outcome; an error if it has not finished."""
    submitted = submitted_of(events, goal_id)
    original = summarize(events, goal_id, submitted.tenant)
    if original.status == "unfinished":
        raise AgentOSError(f"goal {goal_id} has not finished yet; replay it once it completed or failed")
    return submitted, original


def _sandbox_tenant(goal_id: str, asked: str | None, original: str) -> str:
    """The replay's tenant: the one asked for, else ``sandbox-<id>``; never the original's."""
    sandbox = asked or default_sandbox_tenant(goal_id)
    if sandbox == original:
        raise AgentOSError(f"the sandbox tenant must differ from the original's ({original!r})")
    return sandbox


@contextlib.contextmanager
def _sandbox_state(keep: bool) -> Iterator[Path]:
    """A fresh directory for the sandbox's state and logs, removed afterwards unless ``keep``."""
    state = Path(tempfile.mkdtemp(prefix="agentos-replay-"))
    try:
        yield state
    finally:
        if not keep:
            shutil.rmtree(state, ignore_errors=True)


async def replay_goal(
    settings: KernelSettings,
    goal_id: str,
    *,
    tenant: str | None = None,
    mode: str = "recorded",
    sandbox_tenant: str | None = None,
    scenario: Path | None = None,
    timeout: float = 600.0,
    keep: bool = False,
    console: Console | None = None,
) -> ReplayReport:
    """Replay one recorded goal in a sandbox and compare its outcome with the original's.

    ``settings`` reach the original's log. Raises :class:`AgentOSError` on bad input (unknown
    mode or goal, a sandbox tenant equal to the original's, a missing scenario file).
    """
    _check_options(mode, scenario, tenant, sandbox_tenant)
    events = await _recording(settings, goal_id, tenant)
    submitted, original = _finished_original(events, goal_id)
    sandbox = _sandbox_tenant(goal_id, sandbox_tenant, submitted.tenant)
    with _sandbox_state(keep) as state:
        scenario_file, rules = _scenario(events, mode, scenario, state)
        new_id, replayed, counts = await run_in_sandbox(submitted, sandbox, scenario_file, state, timeout, console)
        replay = summarize(replayed, new_id, sandbox)
        report = ReplayReport(
            mode=mode,
            sandbox_tenant=sandbox,
            original=original,
            replay=replay,
            differences=compare(original, replay),
            sandbox_dir=str(state) if keep else None,
            recorded_rules=len(rules),
            recorded_rules_used=sum(1 for r in rules if counts.get(r["name"], 0) > 0),
        )
        if replay.status == "unfinished":
            report.differences.insert(0, f"the replay did not finish within {timeout:.0f}s")
        return report


def _shipped_scenario() -> Path:
    from importlib import resources

    return Path(str(resources.files("agentos_offline_model") / "scenarios" / "demo.yaml"))


def replay(
    goal_id: Annotated[str, typer.Argument(help="The goal to replay")],
    tenant: Annotated[str | None, typer.Option(help="The goal's tenant (narrows the read of the log)")] = None,
    mode: Annotated[
        str, typer.Option(help="recorded: the recording's answers; offline: the offline model")
    ] = "recorded",
    sandbox_tenant: Annotated[str | None, typer.Option(help="Tenant of the replay (default sandbox-<id>)")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Offline mode: the scenario the offline model plays")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the replay's outcome")] = 600.0,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the sandbox's state and logs")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Re-run a recorded goal in a sandbox and compare the outcome (exit 0 same, 1 different, 2 error)."""
    try:
        report = asyncio.run(
            replay_goal(
                resolve(KernelSettings()),
                goal_id,
                tenant=tenant,
                mode=mode,
                sandbox_tenant=sandbox_tenant,
                scenario=scenario,
                timeout=timeout,
                keep=keep,
            )
        )
    except AgentOSError as exc:
        fail(exc)
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    else:
        render_report(report, console)
    if not report.equal:
        raise typer.Exit(1)


__all__ = [
    "GoalSummary",
    "ReplayReport",
    "compare",
    "read_goal_events",
    "recorded_scenario",
    "render_report",
    "replay",
    "replay_goal",
    "run_in_sandbox",
    "summarize",
]
