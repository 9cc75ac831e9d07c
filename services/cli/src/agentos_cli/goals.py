"""`agentos submit` and `agentos watch`: put a goal on the bus and follow it live to its outcome."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Required, TypedDict

import nats.errors
from agentos_kernel import Bus, InvalidInput, control
from agentos_kernel.fleet import read_fleet
from agentos_kernel.tasks import cancel_and_wait
from agentos_kernel.tracing import trace_id
from agentos_schemas import EVENTS_STREAM, Event, codec, id_time, new_event_id
from agentos_schemas.events import (
    ContextReady,
    GoalCompleted,
    GoalEscalated,
    GoalFailed,
    GoalHeld,
    GoalPlanned,
    GoalSubmitted,
    Limits,
    MemoryCommitted,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    TaskReviewed,
    TaskStarted,
)
from agentos_schemas.events.policy import ApprovalDecided, ApprovalRequested
from agentos_schemas.money import usd
from nats.js import api
from pydantic import ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table


async def submit(
    bus: Bus,
    text: str,
    *,
    tenant: str,
    workflow: str | None = None,
    limits: Limits | None = None,
    capability: str | None = None,
) -> Event[GoalSubmitted]:
    if not text.strip():
        raise InvalidInput('the goal is empty: say what it is, e.g. agentos submit "Draft a summary report"')
    goal_id = new_event_id()
    try:
        data = GoalSubmitted(
            goal_id=goal_id, text=text, workflow=workflow, limits=limits or Limits(), capability=capability
        )
    except ValidationError as exc:
        raise InvalidInput(f"the goal is invalid: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    event = bus.new(
        data, tenant=tenant, subject=f"goal/{goal_id}", correlationid=goal_id, principal=f"user:{getpass.getuser()}"
    )
    await bus.publish(event)
    return event


async def check_servable(bus: Bus, *, capability: str | None, workflow: str | None) -> None:
    """Refuse, before anything is published, a goal naming a capability or workflow that the fleet
    (as the log states it: announced agents, declared workflows) does not have."""
    if capability is None and workflow is None:
        return
    refusal = (await read_fleet(bus)).refusal(capability=capability, workflow=workflow)
    if refusal is not None:
        raise InvalidInput(f"the goal is refused: {refusal.detail}")


def goal_start_time(goal_id: str) -> dt.datetime | None:
    """Where a reader of one goal's events can start in the log (see ``agentos_schemas.id_time``):
    None for ids that carry no time, such as the uuid5 ids the gateway derives from idempotency
    keys, which must be read from the start."""
    return id_time(goal_id)


class GoalStart(TypedDict, total=False):
    """Where a consumer reading one goal's events starts: a deliver policy, and its start time."""

    deliver_policy: Required[api.DeliverPolicy]
    opt_start_time: dt.datetime


def from_goal_start(goal_id: str) -> GoalStart:
    """``deliver_policy`` (and start time) for a consumer reading one goal's events."""
    start = goal_start_time(goal_id)
    if start is None:
        return {"deliver_policy": api.DeliverPolicy.ALL}
    return {"deliver_policy": api.DeliverPolicy.BY_START_TIME, "opt_start_time": start}


@dataclass
class StepView:
    agent: str = ""
    status: str = "planned"
    attempts: int = 0
    started: float | None = None
    finished: float | None = None
    note: str = ""


@dataclass
class GoalView:
    goal_id: str
    text: str = ""
    steps: dict[str, StepView] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    outcome: Event[Any] | None = None
    traceparent: str | None = None
    recalled: set[str] = field(default_factory=set)
    semantic: set[str] = field(default_factory=set)
    memories_committed: int = 0
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    tenant: str | None = None
    paused_by: list[control.Halt] = field(default_factory=list)
    switches_unknown: str | None = None
    """Why the kill switches could not be read just now (None once they are read again)."""
    waiting: dict[str, ApprovalRequested] = field(default_factory=dict)
    """Approvals of this goal that wait for a human, by approval id."""

    def fold(self, event: Event[Any]) -> None:
        d, now = event.data, (event.time or dt.datetime.now(dt.UTC)).timestamp()
        self.traceparent = self.traceparent or event.traceparent
        if isinstance(d, GoalSubmitted):
            self.text, self.tenant = d.text, event.tenant
        elif isinstance(d, GoalPlanned):
            for s in d.steps:
                self.steps.setdefault(s.step_id, StepView())
            self.notes.append(
                f"plan r{d.revision} by {d.planner}: {len(d.steps)} steps"
                + (f" (re-plan: {d.reason})" if d.reason else "")
            )
        elif isinstance(d, TaskAssigned):
            self._assigned(d, now)
        elif isinstance(d, TaskStarted | TaskCompleted | TaskFailed | TaskReviewed | ContextReady):
            self._task_event(d, now)
        elif isinstance(d, MemoryCommitted) and d.status == "committed":
            self.memories_committed += len(d.entry_ids)
        elif isinstance(d, ApprovalRequested | ApprovalDecided):
            self._approval(d)
        elif isinstance(d, GoalEscalated):
            self.notes.append(f"escalated to {d.to}: {d.reason}")
        elif isinstance(d, GoalHeld):
            self.notes.append(f"held: {d.reason}")
            if d.step_id:
                self.steps.setdefault(d.step_id, StepView()).status = "held"
        elif isinstance(d, GoalCompleted | GoalFailed):
            self.outcome = event

    def _approval(self, d: ApprovalRequested | ApprovalDecided) -> None:
        if isinstance(d, ApprovalRequested):
            self.waiting[d.approval_id] = d
        elif self.waiting.pop(d.approval_id, None) is not None or d.goal_id == self.goal_id:
            by = f" by {', '.join(d.decided_by)}" if d.decided_by else ""
            self.notes.append(f"approval {d.approval_id} {d.status}{by}" + (f": {d.reason}" if d.reason else ""))

    def waiting_lines(self) -> list[str]:
        """One line per approval the goal waits for, with the exact command that approves it."""
        lines = []
        for a in self.waiting.values():
            what = f"{a.request.action} {a.request.resource}"
            who = f"{a.needed} {'person' if a.needed == 1 else 'different people'} with role {a.approver_role!r}"
            lines.append(
                f"waiting for a human: approval {a.approval_id} ({a.risk} risk, {what}, agent "
                f"{a.request.agent or '-'}) needs {who}; approve with: agentos approve {a.approval_id} "
                f"--as <user>  (or: agentos reject {a.approval_id} --as <user> --reason ...)"
            )
        return lines

    def _assigned(self, d: TaskAssigned, now: float) -> None:
        step = self.steps.setdefault(d.step_id, StepView())
        if d.review_of:
            step.status, step.note = "in review", f"QA by {d.agent}"
        else:
            step.agent, step.status, step.attempts = d.agent, "assigned", d.attempt
            step.started = step.started or now

    def _task_event(self, d: Any, now: float) -> None:
        sid = getattr(d, "step_id", "") or d.task_id.split("/")[2]
        step = self.steps.setdefault(sid, StepView())
        is_review = "/qa" in d.task_id
        if isinstance(d, ContextReady):
            if not is_review:
                kinds = d.manifest.memory_kinds
                self.recalled.update(e for e, k in kinds.items() if k == "episodic")
                self.semantic.update(e for e, k in kinds.items() if k == "semantic")
        elif isinstance(d, TaskStarted) and not is_review:
            step.status = "running"
        elif isinstance(d, TaskCompleted) and not is_review:
            step.status, step.finished = "done", now
            self.intervals[d.task_id] = (step.started or now, now)
        elif isinstance(d, TaskFailed):
            step.status, step.note = "failed", d.reason[:60]
            self.notes.append(f"{sid}: failed ({d.reason[:100]})")
        elif isinstance(d, TaskReviewed):
            step.status = "accepted" if d.verdict == "accepted" else "redo"
            step.note = "" if d.verdict == "accepted" else f"QA rejected: {d.feedback[:60]}"
            if d.verdict == "rejected":
                self.notes.append(f"QA rejected {sid}: {d.feedback}")

    def covering_keys(self) -> set[str]:
        """The switch keys that would pause this goal's unfinished work (see ``control.Work``)."""
        busy = [s.agent for s in self.steps.values() if s.agent and s.status in ("assigned", "running", "redo")]
        keys = set(control.Work(workflow=self.goal_id, tenant=self.tenant).switch_keys())
        for agent in busy:
            keys.update(control.Work(agent=agent).switch_keys())
        return keys

    def paused_lines(self) -> list[str]:
        lines = [f"paused by {h.key}: {h.reason} ({h.by}); `agentos resume` lifts it" for h in self.paused_by]
        if self.switches_unknown:
            lines.append(f"kill switches unknown ({self.switches_unknown}); reading them again")
        return lines

    def render(self, bullet: str = "\u2022") -> Group:
        """The table, the last notes, what pauses the goal and what waits for a human, if anything."""
        paused = [f"  [bold yellow]{escape(line)}[/]" for line in self.paused_lines()]
        waiting = [f"  [bold magenta]{escape(line)}[/]" for line in self.waiting_lines()]
        return Group(self.table(), *(f"  {bullet} {escape(n)}" for n in self.notes[-6:]), *paused, *waiting)

    def table(self) -> Table:
        t = Table(title=f"goal {self.goal_id}", expand=False)
        for col in ("step", "agent", "status", "attempts", "note"):
            t.add_column(col)
        colours = {"accepted": "green", "done": "green", "running": "yellow", "failed": "red", "redo": "magenta"}
        for sid, s in self.steps.items():
            t.add_row(sid, s.agent, f"[{colours.get(s.status, 'white')}]{s.status}[/]", str(s.attempts), s.note)
        return t


async def follow(
    bus: Bus, goal_id: str, *, subjects: str = "agentos.>", timeout: float = 600.0, from_start: bool = False
) -> AsyncIterator[Event[Any]]:
    """The goal's events as the log has them and then live, until its outcome (yielded last) or
    ``timeout``. Reads from the goal's start time when its id carries one (see ``id_time``)."""
    start: GoalStart = {"deliver_policy": api.DeliverPolicy.ALL} if from_start else from_goal_start(goal_id)
    sub = await bus.js.subscribe(
        subjects,
        stream=EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=start["deliver_policy"],
        config=api.ConsumerConfig(opt_start_time=start.get("opt_start_time")),
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            try:
                event = await bus.decode(msg.data, msg.headers)
            except codec.DecodeError:
                continue
            if event.correlationid == goal_id:
                yield event
                if isinstance(event.data, GoalCompleted | GoalFailed):
                    return
    finally:
        await sub.unsubscribe()


async def watch(bus: Bus, goal_id: str, console: Console, *, timeout: float = 600.0) -> GoalView:
    """Follow a goal's events live until it completes or fails; returns what was seen. While a kill
    switch covers its work, or an approval waits for a human, a line says so.

    On a terminal the table is redrawn in place; off one (CI logs, pipes), where a live display
    shows nothing, each change is printed as a line (:class:`agentos_cli.progress.Lines`)."""
    from agentos_cli.output import glyph
    from agentos_cli.progress import Lines

    view = GoalView(goal_id)
    if not console.is_terminal:
        lines = Lines(view, console)
        switches = asyncio.create_task(_watch_switches(bus, view, lines.update))
        try:
            async for event in follow(bus, goal_id, timeout=timeout):
                view.fold(event)
                lines.update(event)
        finally:
            await cancel_and_wait(switches)
        return view
    bullet = glyph(console, "\u2022", "-")
    with Live(view.table(), console=console, refresh_per_second=8, transient=False) as live:
        switches = asyncio.create_task(_watch_switches(bus, view, lambda: live.update(view.render(bullet))))
        try:
            async for event in follow(bus, goal_id, timeout=timeout):
                view.fold(event)
                live.update(view.render(bullet))
        finally:
            await cancel_and_wait(switches)
    return view


async def _watch_switches(bus: Bus, view: GoalView, changed: Callable[[], None], every_s: float = 1.0) -> None:
    """Keep ``view.paused_by`` to the switches that are on and cover the goal's unfinished work;
    while they cannot be read, ``view.switches_unknown`` says why (the view shows it)."""
    while True:
        paused, unknown = view.paused_by, None
        try:
            halts = await control.list_halts(bus.js)
        except (nats.errors.Error, TimeoutError) as exc:  # shown, not hidden; the watch goes on
            unknown = f"{type(exc).__name__}: {exc}"[:160]
        else:
            covering = view.covering_keys()
            paused = [h for h in halts if h.key in covering]
        if (paused, unknown) != (view.paused_by, view.switches_unknown):
            view.paused_by, view.switches_unknown = paused, unknown
            changed()
        await asyncio.sleep(every_s)


def overlapping(view: GoalView) -> int:
    """The most work tasks that were running at the same moment."""
    edges = sorted([(a, 1) for a, _ in view.intervals.values()] + [(b, -1) for _, b in view.intervals.values()])
    best = cur = 0
    for _, delta in edges:
        cur += delta
        best = max(best, cur)
    return best


def render_outcome(view: GoalView, console: Console) -> bool:
    from agentos_cli.output import glyph

    if view.outcome is None:
        console.print("[bold red]the goal did not finish within the watch timeout[/]")
        return False
    d = view.outcome.data
    console.print()
    if view.recalled:
        console.print(f"[cyan]Recalled {len(view.recalled)} finding(s) from episodic memory of earlier goals.[/]")
    if isinstance(d, GoalFailed):
        console.print(Panel(f"[bold red]failed[/] ({d.code}): {d.reason}", title="outcome"))
    else:
        console.print(Panel(Markdown(d.result), title="result"))
    tid = trace_id(view.traceparent)
    dot = glyph(console, " \u00b7 ", ", ")
    console.print(
        dot.join(
            (
                f"cost {usd(d.cost_usd)}",
                f"{d.tokens} tokens",
                f"{d.duration_s:.1f}s",
                f"{d.steps_run} task attempts",
                f"up to {overlapping(view)} tasks in parallel",
                f"trace id {tid}",
            )
        ),
        highlight=False,
    )
    if view.memories_committed:
        console.print(f"{view.memories_committed} finding(s) committed to episodic memory after QA review.")
    return isinstance(d, GoalCompleted)
