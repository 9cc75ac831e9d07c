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
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import nats.errors
import typer
import yaml
from agentos_cli import registry
from agentos_cli.goals import follow, from_goal_start
from agentos_cli.supervisor import Runtime
from agentos_kernel import AgentOSError, Bus, KernelSettings
from agentos_kernel.llm import OFFLINE_ALIASES, ModelRegistry
from agentos_kernel.runtime import resolve
from agentos_offline_model import Scenario
from agentos_schemas import EVENTS_STREAM, Event, codec, new_event_id
from agentos_schemas.events import (
    GoalCompleted,
    GoalFailed,
    GoalPlanned,
    GoalSubmitted,
    MemoryProposed,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    TaskReviewed,
)
from agentos_schemas.events.policy import PolicyDecided
from agentos_schemas.subjects import NamingError, check_token
from nats.js import api
from rich.console import Console
from rich.table import Table

MODES = ("recorded", "offline")
#: What a sandbox runs: the services that execute a goal. No gateway (a sandbox takes no outside
#: traffic and fires no schedules) and no audit (the sandbox log is thrown away with it).
SANDBOX_SERVICES = ("orchestrator", "context-manager", "specialist", "memory", "policy")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)

console = Console()
err = Console(stderr=True)


# --- reading the recording ------------------------------------------------------------------------


async def read_goal_events(bus: Bus, goal_id: str, tenant: str | None = None, *,
                           timeout: float = 300.0) -> list[Event[Any]]:
    """Every stored event of one goal (correlation id = ``goal_id``), in log order.

    Like :func:`agentos_kernel.replay.replay` (an ephemeral pull consumer read until nothing is
    pending), but starting at the goal's submission time when its id is a UUIDv7, so a long log is
    not read from its beginning; ``tenant`` narrows the read to that tenant's subjects.
    """
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, filter_subjects=[f"agentos.{tenant or '*'}.>"],
        inactive_threshold=60.0, mem_storage=True, **from_goal_start(goal_id))
    psub = await bus.js.pull_subscribe(subject="", stream=EVENTS_STREAM, config=config)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: list[Event[Any]] = []
    try:
        if (await psub.consumer_info()).num_pending == 0:
            return found
        while True:
            try:
                msgs = await psub.fetch(512, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                if (await psub.consumer_info()).num_pending == 0:
                    return found
                if loop.time() > deadline:
                    raise AgentOSError(f"reading goal {goal_id} from the log took over {timeout:.0f}s"
                                       ) from None
                continue
            for msg in msgs:
                try:
                    event = await bus.decode(msg.data, msg.headers)
                except codec.DecodeError:
                    continue
                if event.correlationid == goal_id:
                    found.append(event)
            if msgs and msgs[-1].metadata.num_pending == 0:
                return found
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()


def submitted_of(events: list[Event[Any]], goal_id: str) -> Event[GoalSubmitted]:
    for event in events:
        if isinstance(event.data, GoalSubmitted) and event.data.goal_id == goal_id:
            return event
    raise AgentOSError(f"goal {goal_id!r} has events in the log but no goal.submitted; it cannot be replayed")


# --- recorded model answers -----------------------------------------------------------------------


def step_line(task: TaskAssigned) -> str:
    """The line of the task section that names the step, capability and attempt (see the
    context-manager's ``task_section``): it identifies one task attempt within a plan revision."""
    return f"Step: {task.step_id} (capability: {task.capability}, attempt {task.attempt})"


def _tool_arguments(decided: PolicyDecided, proposals: list[MemoryProposed]) -> dict[str, Any]:
    """A recorded tool call's arguments. The decision keeps them cut short (strings to 200
    characters, lists and objects as JSON text); a memory proposal keeps its content whole."""
    args = {k: v for k, v in decided.request.args.items() if not k.endswith("_domain")}
    if decided.request.tool == "propose_memory":
        prefix = str(args.get("content", "")).strip()
        for proposal in proposals:
            if prefix and proposal.content.startswith(prefix):
                return {"content": proposal.content, "tags": list(proposal.tags)}
    for key, value in list(args.items()):
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(ValueError):
                args[key] = json.loads(value)
    return args


@dataclass
class _Attempt:
    """What the recording says one task attempt's model answered, turn by turn."""

    agent: str
    line: str
    rounds: list[list[dict[str, Any]]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    """The answer to every later turn (a failed attempt's repeated behaviour), if any."""
    after_calls: int = 1


def _attempts(events: list[Event[Any]]) -> list[_Attempt]:
    assigned = [e.data for e in events if isinstance(e.data, TaskAssigned)]
    seen: set[str] = set()
    decided: dict[str, dict[int, list[PolicyDecided]]] = {}
    for e in events:
        d = e.data
        if isinstance(d, PolicyDecided) and d.request.tool and d.request.call_id not in seen:
            seen.add(d.request.call_id)
            prefix = f"{d.request.task_id}:"
            round_text = d.request.call_id[len(prefix):].split(":", 1)[0]
            if d.request.call_id.startswith(prefix) and round_text.isdigit():
                decided.setdefault(d.request.task_id, {}).setdefault(int(round_text), []).append(d)
    proposals = [e.data for e in events if isinstance(e.data, MemoryProposed)]
    ends = {e.data.task_id: e.data for e in events if isinstance(e.data, TaskCompleted | TaskFailed)}
    out = []
    for task in assigned:
        attempt = _Attempt(agent=task.agent, line=step_line(task))
        mine = [p for p in proposals if p.task_id == task.task_id]
        for _, calls in sorted(decided.get(task.task_id, {}).items()):
            attempt.rounds.append([{"name": c.request.tool, "arguments": _tool_arguments(c, mine)}
                                   for c in calls])
        end = ends.get(task.task_id)
        if isinstance(end, TaskCompleted):
            attempt.final = {"json": end.output}
        elif isinstance(end, TaskFailed):
            attempt.after = _failure_answer(end, attempt.rounds)
            attempt.after_calls = max(1, len(end.usage.calls) - len(attempt.rounds))
        out.append(attempt)
    return out


def _failure_answer(end: TaskFailed, rounds: list[list[dict[str, Any]]]) -> dict[str, Any] | None:
    """How the model behaved after its recorded tool rounds in an attempt that failed."""
    if end.code == "invalid_output":
        return {"fault": "invalid_json"}
    if end.code == "model_unavailable":
        return {"fault": "server_error"}
    if end.code == "tool_loop" and rounds:
        return {"tool_calls": rounds[-1]}
    return None  # denials, budgets, halts: the sandbox's own policy decides those


def recorded_scenario(events: list[Event[Any]], models: tuple[str, ...] = ()) -> dict[str, Any]:
    """An offline-model scenario that answers each request as the recording says it was answered.

    Rules are keyed by agent (the ``agent:`` line of the system prompt), the step line of the task
    (step, capability and attempt) and the model turn; the planner by its turn. A key that occurs
    more than once (the same step and attempt in a later plan revision) is answered in log order:
    every occurrence but the last is limited to the requests it answered. Answers are verbatim.
    """
    rules: list[dict[str, Any]] = []

    def add(name: str, match: dict[str, Any], respond: dict[str, Any], times: int | None) -> None:
        rule: dict[str, Any] = {"name": f"{len(rules) + 1:03d} {name}", "match": match,
                                "respond": {**respond, "template": False}}
        if times is not None:
            rule["times"] = times
        rules.append(rule)

    goal = next((e.data for e in events if isinstance(e.data, GoalSubmitted)), None)
    plans = sorted((e.data for e in events
                    if isinstance(e.data, GoalPlanned) and e.data.planner.startswith("llm:")),
                   key=lambda p: p.revision)
    for i, plan in enumerate(plans):
        steps = [s.model_dump(mode="json") for s in plan.steps]
        add(f"planner r{plan.revision}", {"agent": "planner", "turn": 1}, {"json": {"steps": steps}},
            1 if i < len(plans) - 1 else None)
    failed = next((e.data for e in events if isinstance(e.data, GoalFailed)), None)
    if goal is not None and goal.workflow is None and failed is not None and failed.code == "planner_failed":
        fault = "server_error" if "every model failed" in failed.reason else "invalid_json"
        add("planner failed", {"agent": "planner"}, {"fault": fault}, None)

    attempts = _attempts(events)
    remaining = Counter((a.agent, a.line) for a in attempts)
    for a in attempts:
        remaining[(a.agent, a.line)] -= 1
        last = remaining[(a.agent, a.line)] == 0
        key = {"agent": a.agent, "any_user_contains": a.line}
        label = f"{a.agent} {a.line.removeprefix('Step: ')}"
        for turn, calls in enumerate(a.rounds, start=1):
            add(f"{label} turn {turn}", {**key, "turn": turn}, {"tool_calls": calls}, None if last else 1)
        if a.final is not None:
            add(f"{label} turn {len(a.rounds) + 1}", {**key, "turn": len(a.rounds) + 1}, a.final,
                None if last else 1)
        if a.after is not None:
            add(f"{label} later turns", key, a.after, None if last else a.after_calls)
    names = {"offline-fast", "offline-smart", "offline-backup", *models}
    for e in events:
        usage = getattr(e.data, "usage", None)
        for call in getattr(usage, "calls", ()):
            names.add(call.model.split("/", 1)[-1])
    return {"models": sorted(names), "rules": rules}


def configured_aliases() -> tuple[str, ...]:
    """Aliases of the configured model registry (``AGENTOS_MODELS``), which charters may name:
    the sandbox's offline model serves a model under each, so every alias resolves there."""
    if not os.environ.get("AGENTOS_MODELS"):
        return ()
    try:
        return tuple(a for a in ModelRegistry.load().aliases() if a not in OFFLINE_ALIASES)
    except AgentOSError:
        return ()


# --- what a goal came to --------------------------------------------------------------------------


@dataclass
class GoalSummary:
    """What a goal came to, normalised for comparison."""

    goal_id: str
    tenant: str
    status: str
    """``completed``, ``failed`` or ``unfinished``."""
    code: str | None = None
    plans: list[list[dict[str, Any]]] = field(default_factory=list)
    """Per plan revision: each step's id, capability, dependencies and review flag."""
    outputs: dict[str, Any] = field(default_factory=dict)
    result: str = ""
    """The final result text (a failed goal's reason)."""
    reviews: list[str] = field(default_factory=list)
    """QA verdicts as ``step: verdict``, sorted."""
    cost_usd: float = 0.0
    tokens: int = 0
    duration_s: float = 0.0
    steps_run: int = 0


def normalise(value: Any, masks: dict[str, str]) -> Any:
    """``value`` with run-specific text masked: the given ids and tenants, then any UUID."""
    if isinstance(value, str):
        for text, mask in masks.items():
            if text:
                value = value.replace(text, mask)
        return _UUID.sub("<id>", value).strip()
    if isinstance(value, list | tuple):
        return [normalise(v, masks) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v, masks) for k, v in sorted(value.items())}
    return value


def summarize(events: list[Event[Any]], goal_id: str, tenant: str) -> GoalSummary:
    masks = {goal_id: "<goal>", tenant: "<tenant>"}
    summary = GoalSummary(goal_id=goal_id, tenant=tenant, status="unfinished")
    outputs: dict[str, Any] = {}
    for e in events:
        d = e.data
        if isinstance(d, GoalPlanned):
            summary.plans.append([{"step_id": s.step_id, "capability": s.capability,
                                   "depends_on": sorted(s.depends_on), "review": s.review} for s in d.steps])
        elif isinstance(d, TaskCompleted) and "/qa" not in d.task_id:
            outputs[d.step_id] = d.output
        elif isinstance(d, TaskReviewed):
            summary.reviews.append(f"{d.step_id}: {d.verdict}")
        elif isinstance(d, GoalCompleted | GoalFailed) and summary.status == "unfinished":
            if isinstance(d, GoalCompleted):
                summary.status, summary.result, outputs = "completed", d.result, dict(d.outputs)
            else:
                summary.status, summary.code, summary.result = "failed", d.code, d.reason
            summary.cost_usd, summary.tokens = d.cost_usd, d.tokens
            summary.duration_s, summary.steps_run = d.duration_s, d.steps_run
    summary.outputs = normalise(outputs, masks)
    summary.result = normalise(summary.result, masks)
    summary.reviews.sort()
    return summary


def _paths(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Where two JSON values differ, as ``path: a ≠ b`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                yield f"{sub}: {'missing' if key not in a else _short(a[key])} ≠ " \
                      f"{'missing' if key not in b else _short(b[key])}"
            else:
                yield from _paths(a[key], b[key], sub)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _paths(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path or 'value'}: {_short(a)} ≠ {_short(b)}"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(summary: GoalSummary) -> str:
    return summary.status + (f" ({summary.code})" if summary.code else "")


def compare(original: GoalSummary, replay: GoalSummary) -> list[str]:
    """The differences between two outcomes (none: the replay reproduced the original)."""
    out: list[str] = []
    if (original.status, original.code) != (replay.status, replay.code):
        out.append(f"status: {_status(original)} ≠ {_status(replay)}")
    if len(original.plans) != len(replay.plans):
        out.append(f"plan revisions: {len(original.plans)} ≠ {len(replay.plans)}")
    for revision, (a, b) in enumerate(zip(original.plans, replay.plans, strict=False)):
        mine, theirs = {s["step_id"]: s for s in a}, {s["step_id"]: s for s in b}
        if list(mine) != list(theirs):
            out.append(f"plan r{revision} steps: {', '.join(mine) or '-'} ≠ {', '.join(theirs) or '-'}")
        for sid in [s for s in mine if s in theirs]:
            out += [f"plan r{revision} step {sid} {line}" for line in _paths(mine[sid], theirs[sid])]
    for sid in sorted(set(original.outputs) | set(replay.outputs)):
        if sid not in original.outputs or sid not in replay.outputs:
            where = "replay" if sid in replay.outputs else "original"
            out.append(f"output of step {sid}: only in the {where}")
            continue
        lines = list(_paths(original.outputs[sid], replay.outputs[sid]))
        out += [f"output of step {sid}: {line}" for line in lines[:5]]
        if len(lines) > 5:
            out.append(f"output of step {sid}: … and {len(lines) - 5} more differences")
    if original.result != replay.result:
        a, b = original.result.splitlines() or [""], replay.result.splitlines() or [""]
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        out.append(f"result text differs from line {at + 1}: "
                   f"{_short(a[at] if at < len(a) else '')} ≠ {_short(b[at] if at < len(b) else '')}")
    if original.reviews != replay.reviews:
        out.append(f"QA verdicts: {'; '.join(original.reviews) or '-'} ≠ {'; '.join(replay.reviews) or '-'}")
    return out


@dataclass
class ReplayReport:
    mode: str
    sandbox_tenant: str
    original: GoalSummary
    replay: GoalSummary
    differences: list[str]
    recorded_rules: int = 0
    """Rules in the recorded scenario (recorded mode)."""
    recorded_rules_used: int = 0
    """Of those, how many answered at least one request."""
    sandbox_dir: str | None = None
    """The sandbox's state directory, when kept (``--keep``)."""

    @property
    def equal(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "equal": self.equal}


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
    return [e async for e in follow(bus, goal_id, subjects=f"agentos.{tenant}.>", timeout=timeout,
                                    from_start=True)]


async def run_in_sandbox(submitted: Event[GoalSubmitted], sandbox_tenant: str, scenario_file: Path,
                         state: Path, timeout: float, console: Console | None = None
                         ) -> tuple[str, list[Event[Any]], dict[str, int]]:
    """Submit the recorded goal to a fresh runtime whose offline model plays ``scenario_file``;
    returns (sandbox goal id, its events, the scenario's per-rule match counts)."""
    from agentos_cli.main import wait_for_services  # main imports the audit commands, hence here

    services = [s for s in registry.available() if s in SANDBOX_SERVICES]
    settings = KernelSettings(nats_url=None, database_url=None, nats_user=None, nats_password=None,
                              state_dir=state, nats_sync="default", tenant="default")
    children: dict[str, str | None] = {
        "AGENTOS_MODELS": None, "AGENTOS_OFFLINE_SCENARIO": None, "AGENTOS_ALLOW_LLM_CALLS": "0",
        "AGENTOS_OUTBOX_DIR": str(state / "outbox"), "AGENTOS_TENANT": "default",
        "AGENTOS_NATS_INBOX_PREFIX": None}
    runtime = SandboxRuntime(settings, services, logs=state / "logs", console=console or err, env=children)
    try:
        # The runtime serves the scenario with the shipped offline model on a free port and points
        # every service's model registry at it (AGENTOS_OFFLINE_MODEL_URL).
        with _environ({"AGENTOS_MODELS": None, "AGENTOS_OFFLINE_SCENARIO": str(scenario_file)}):
            resolved = await runtime.start()
        bus = await Bus.connect(resolved, source="cli-replay")
        try:
            await wait_for_services(bus, runtime.services, timeout=120.0)
            data = submitted.data
            goal_id = new_event_id()
            event = bus.new(GoalSubmitted(goal_id=goal_id, text=data.text, workflow=data.workflow,
                                          inputs=data.inputs, limits=data.limits),
                            tenant=sandbox_tenant, subject=f"goal/{goal_id}", correlationid=goal_id,
                            principal=submitted.principal or "user:replay")
            await bus.publish(event)
            events = await _await_outcome(bus, goal_id, sandbox_tenant, timeout)
        finally:
            await bus.close()
        counts = runtime.offline.scenario.counts if runtime.offline is not None else {}
        return goal_id, events, counts
    finally:
        await runtime.stop()


def default_sandbox_tenant(goal_id: str) -> str:
    return f"sandbox-{re.sub(r'[^a-z0-9]', '', goal_id.lower())[-12:] or 'goal'}"


async def replay_goal(settings: KernelSettings, goal_id: str, *, tenant: str | None = None,
                      mode: str = "recorded", sandbox_tenant: str | None = None, scenario: Path | None = None,
                      timeout: float = 600.0, keep: bool = False,
                      console: Console | None = None) -> ReplayReport:
    """Replay one recorded goal in a sandbox and compare its outcome with the original's.

    ``settings`` reach the original's log. Raises :class:`AgentOSError` on bad input (unknown
    mode or goal, a sandbox tenant equal to the original's, a missing scenario file).
    """
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
    if not settings.nats_url:
        raise AgentOSError("no AgentOS is running here: start one with `agentos up` "
                           "(or set AGENTOS_NATS_URL)")
    bus = await Bus.connect(settings, source="cli-replay")
    try:
        events = await read_goal_events(bus, goal_id, tenant)
    finally:
        await bus.close()
    if not events:
        where = f" of tenant {tenant!r}" if tenant else ""
        raise AgentOSError(f"no goal {goal_id!r} in the event log{where}")
    submitted = submitted_of(events, goal_id)
    original = summarize(events, goal_id, submitted.tenant)
    if original.status == "unfinished":
        raise AgentOSError(f"goal {goal_id} has not finished yet; replay it once it completed or failed")
    sandbox = sandbox_tenant or default_sandbox_tenant(goal_id)
    if sandbox == submitted.tenant:
        raise AgentOSError(f"the sandbox tenant must differ from the original's ({submitted.tenant!r})")
    state = Path(tempfile.mkdtemp(prefix="agentos-replay-"))
    try:
        if mode == "recorded":
            recorded = recorded_scenario(events, configured_aliases())
            Scenario.model_validate(recorded)  # fails here, not in the sandbox's model server
            scenario_file = state / "recorded-scenario.yaml"
            scenario_file.write_text(yaml.safe_dump(recorded, sort_keys=False, allow_unicode=True))
        else:
            offline = scenario or os.environ.get("AGENTOS_OFFLINE_SCENARIO")
            scenario_file = Path(offline) if offline else _shipped_scenario()
            recorded = {"rules": []}
        new_id, replayed, counts = await run_in_sandbox(submitted, sandbox, scenario_file, state, timeout,
                                                        console)
        replay = summarize(replayed, new_id, sandbox)
        report = ReplayReport(mode=mode, sandbox_tenant=sandbox, original=original, replay=replay,
                              differences=compare(original, replay), sandbox_dir=str(state) if keep else None)
        if replay.status == "unfinished":
            report.differences.insert(0, f"the replay did not finish within {timeout:.0f}s")
        if mode == "recorded":
            report.recorded_rules = len(recorded["rules"])
            report.recorded_rules_used = sum(1 for r in recorded["rules"] if counts.get(r["name"], 0) > 0)
        return report
    finally:
        if not keep:
            shutil.rmtree(state, ignore_errors=True)


def _shipped_scenario() -> Path:
    from importlib import resources

    return Path(str(resources.files("agentos_offline_model") / "scenarios" / "demo.yaml"))


# --- output ---------------------------------------------------------------------------------------


def render_report(report: ReplayReport, out: Console) -> None:
    a, b = report.original, report.replay
    table = Table(title=f"replay of goal {a.goal_id} ({report.mode} answers) in sandbox tenant "
                        f"{report.sandbox_tenant}")
    for column in ("", "original", "replay", "same"):
        table.add_column(column)

    def row(name: str, x: Any, y: Any, same: bool) -> None:
        table.add_row(name, str(x), str(y), "[green]yes[/]" if same else "[red]no[/]")

    row("goal", a.goal_id, b.goal_id, True)
    row("status", _status(a), _status(b), (a.status, a.code) == (b.status, b.code))
    row("plan", "; ".join(" ".join(s["step_id"] for s in p) for p in a.plans),
        "; ".join(" ".join(s["step_id"] for s in p) for p in b.plans), a.plans == b.plans)
    row("step outputs", f"{len(a.outputs)} steps", f"{len(b.outputs)} steps", a.outputs == b.outputs)
    row("result text", f"{len(a.result)} chars", f"{len(b.result)} chars", a.result == b.result)
    row("QA verdicts", len(a.reviews), len(b.reviews), a.reviews == b.reviews)
    row("tokens · cost", f"{a.tokens} · ${a.cost_usd:.6f}", f"{b.tokens} · ${b.cost_usd:.6f}", True)
    out.print(table)
    if report.mode == "recorded":
        out.print(f"recorded answers: {report.recorded_rules_used} of {report.recorded_rules} rules used")
    if report.sandbox_dir:
        out.print(f"sandbox kept in {report.sandbox_dir}")
    if report.equal:
        out.print("[bold green]the replay reproduced the original outcome[/]")
        return
    out.print(f"[bold red]{len(report.differences)} difference(s):[/]")
    for line in report.differences:
        out.print(f"  • {line}", highlight=False, soft_wrap=True)


def replay(
    goal_id: Annotated[str, typer.Argument(help="The goal to replay")],
    tenant: Annotated[str | None, typer.Option(help="The goal's tenant (narrows the read of the log)")]
    = None,
    mode: Annotated[str, typer.Option(help="recorded: the recording's answers; offline: the offline model")]
    = "recorded",
    sandbox_tenant: Annotated[str | None, typer.Option(help="Tenant of the replay (default sandbox-<id>)")]
    = None,
    scenario: Annotated[Path | None, typer.Option(help="Offline mode: the scenario the offline model plays")]
    = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the replay's outcome")] = 600.0,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the sandbox's state and logs")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Re-run a recorded goal in a sandbox and compare the outcome (exit 0 same, 1 different, 2 error)."""
    try:
        report = asyncio.run(replay_goal(resolve(KernelSettings()), goal_id, tenant=tenant, mode=mode,
                                         sandbox_tenant=sandbox_tenant, scenario=scenario, timeout=timeout,
                                         keep=keep))
    except AgentOSError as exc:
        err.print(f"[bold red]agentos: error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    else:
        render_report(report, console)
    if not report.equal:
        raise typer.Exit(1)
