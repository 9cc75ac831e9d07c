"""Kill switches from the command line: `agentos halt`, `agentos resume`, `agentos halts`.

A switch is a key in the ``AGENTOS_CONTROL`` bucket, which every service replica watches; the
command writes (or deletes) the key first — that is what stops the work — and then publishes
``control.halt_requested`` / ``control.resume_requested`` so the audit trail records who did it
and why.
"""

from __future__ import annotations

import getpass
import time
from typing import TYPE_CHECKING, Annotated, TypeAlias

import typer

from agentos_cli import output
from agentos_cli.connect import connected_bus, run

if TYPE_CHECKING:
    from agentos_kernel import Bus, control
    from agentos_schemas.events.control import Scope

console = output.console()
err = output.console(stderr=True)

Agent: TypeAlias = Annotated[str | None, typer.Option("--agent", help="An agent (charter name)")]
Goal: TypeAlias = Annotated[str | None, typer.Option("--goal", help="A goal (its id, as `agentos submit` prints it)")]
Workflow: TypeAlias = Annotated[
    str | None, typer.Option("--workflow", hidden=True, help="Deprecated: the old name of --goal (it takes a goal id)")
]
Model: TypeAlias = Annotated[str | None, typer.Option("--model", help="A model (alias or litellm model string)")]
Tenant: TypeAlias = Annotated[str | None, typer.Option("--tenant", help="A tenant")]
All: TypeAlias = Annotated[bool, typer.Option("--all", help="Everything")]


def goal_of(goal: str | None, workflow: str | None) -> str | None:
    """``--goal``, or the deprecated ``--workflow`` (with a warning on stderr); not both."""
    if workflow is None:
        return goal
    err.print(
        "agentos: warning: --workflow is deprecated and will be removed: it takes a goal id, "
        "so it is now called --goal",
        highlight=False,
        soft_wrap=True,
    )
    if goal is not None and goal != workflow:
        raise typer.BadParameter("--goal and --workflow (its old name) name different goals", param_hint="--goal")
    return workflow


def pick_scope(
    agent: str | None, goal: str | None, model: str | None, tenant: str | None, everything: bool
) -> tuple[Scope, str]:
    """(scope, target) from the options; exactly one must be given. A goal's switch is the
    ``workflow`` scope of :mod:`agentos_kernel.control` (a goal's run is its workflow)."""
    from agentos_kernel import InvalidInput, control

    named: tuple[tuple[Scope, str | None], ...] = (
        ("agent", agent),
        ("workflow", goal),
        ("model", model),
        ("tenant", tenant),
    )
    given: list[tuple[Scope, str]] = [(s, t) for s, t in named if t]
    if everything:
        given.append(("all", "*"))
    if len(given) != 1:
        raise InvalidInput("name exactly one of --agent, --goal, --model, --tenant or --all")
    scope, target = given[0]
    control.halt_key(scope, target)  # validates the target
    return scope, target


async def _bus() -> Bus:
    return await connected_bus()


def _tenant(bus: Bus, scope: Scope, target: str) -> str:
    return target if scope == "tenant" else bus.settings.tenant


async def do_halt(bus: Bus, scope: Scope, target: str, reason: str, by: str) -> control.Halt:
    """Turn the switch on, then record the request in the log."""
    from agentos_kernel import control
    from agentos_schemas.events import HaltRequested

    halt = await control.set_halt(bus.js, control.Halt(scope, target, reason, by, time.time()))
    await bus.publish(
        bus.new(
            HaltRequested(scope=scope, target=target, reason=reason, requested_by=by),
            tenant=_tenant(bus, scope, target),
            subject=f"control/{halt.key}",
            principal=by,
        )
    )
    return halt


async def do_resume(bus: Bus, scope: Scope, target: str, by: str) -> bool:
    """Turn the switch off (if it was on), then record the request in the log."""
    from agentos_kernel import control
    from agentos_schemas.events import ResumeRequested

    was_on = await control.clear_halt(bus.js, scope, target)
    await bus.publish(
        bus.new(
            ResumeRequested(scope=scope, target=target, requested_by=by),
            tenant=_tenant(bus, scope, target),
            subject=f"control/{control.halt_key(scope, target)}",
            principal=by,
        )
    )
    return was_on


_run = run


def halt(
    agent: Agent = None,
    goal: Goal = None,
    model: Model = None,
    tenant: Tenant = None,
    everything: All = False,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail)")] = "operator halt",
    workflow: Workflow = None,
) -> None:
    """Kill switch: stop an agent, a goal, a model, a tenant or everything, at once, everywhere."""
    goal = goal_of(goal, workflow)

    async def go() -> None:
        scope, target = pick_scope(agent, goal, model, tenant, everything)
        bus = await _bus()
        try:
            found = await do_halt(bus, scope, target, reason, f"user:{getpass.getuser()}")
        finally:
            await bus.close()
        console.print(f"[bold red]halted[/] {found.key} (revision {found.revision}): {reason}")

    _run(go())


def resume(
    agent: Agent = None,
    goal: Goal = None,
    model: Model = None,
    tenant: Tenant = None,
    everything: All = False,
    workflow: Workflow = None,
) -> None:
    """Lift a kill switch; paused work carries on from where it stopped."""
    goal = goal_of(goal, workflow)

    async def go() -> None:
        from agentos_kernel import control

        scope, target = pick_scope(agent, goal, model, tenant, everything)
        bus = await _bus()
        try:
            was_on = await do_resume(bus, scope, target, f"user:{getpass.getuser()}")
        finally:
            await bus.close()
        key = control.halt_key(scope, target)
        console.print(f"[bold green]resumed[/] {key}" if was_on else f"{key} was not halted")

    _run(go())


def halts(fmt: output.Format = "table", as_json: output.Json = False) -> None:
    """The kill switches that are on."""
    form = output.chosen(fmt, as_json)

    async def go() -> list[control.Halt]:
        from agentos_kernel import control

        bus = await _bus()
        try:
            return await control.list_halts(bus.js)
        finally:
            await bus.close()

    rows = [
        {
            "key": h.key,
            "scope": h.scope,
            "target": h.target,
            "by": h.by,
            "at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.at)),
            "reason": h.reason,
        }
        for h in _run(go())
    ]
    section = output.Section(
        "Kill switches on",
        rows,
        columns=("key", "scope", "target", "by", "at", "reason"),
        empty="(no kill switch is on)",
    )
    output.emit(console, [section], form)


def register(app: typer.Typer) -> None:
    """Add `halt`, `resume` and `halts` to ``app``."""
    for command in (halt, resume, halts):
        app.command()(command)
