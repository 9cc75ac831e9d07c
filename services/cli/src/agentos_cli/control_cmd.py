"""Kill switches from the command line: `agentos halt`, `agentos resume`, `agentos halts`.

A switch is a key in the ``AGENTOS_CONTROL`` bucket, which every service replica watches; the
command writes (or deletes) the key first — that is what stops the work — and then publishes
``control.halt_requested`` / ``control.resume_requested`` so the audit trail records who did it
and why.
"""

from __future__ import annotations

import getpass
import time
from typing import Annotated

import typer
from agentos_kernel import AgentOSError, Bus, KernelSettings, control
from agentos_kernel.runtime import resolve
from agentos_schemas.events import HaltRequested, ResumeRequested
from rich.console import Console

console = Console()
err = Console(stderr=True)

Agent = Annotated[str | None, typer.Option("--agent", help="An agent (charter name)")]
Workflow = Annotated[str | None, typer.Option("--workflow", help="A workflow (goal id)")]
Model = Annotated[str | None, typer.Option("--model", help="A model (alias or litellm model string)")]
Tenant = Annotated[str | None, typer.Option("--tenant", help="A tenant")]
All = Annotated[bool, typer.Option("--all", help="Everything")]


def pick_scope(agent: str | None, workflow: str | None, model: str | None, tenant: str | None,
               everything: bool) -> tuple[str, str]:
    """(scope, target) from the options; exactly one must be given."""
    given = [(s, t) for s, t in (("agent", agent), ("workflow", workflow), ("model", model),
                                 ("tenant", tenant)) if t]
    if everything:
        given.append(("all", "*"))
    if len(given) != 1:
        raise AgentOSError("name exactly one of --agent, --workflow, --model, --tenant or --all")
    scope, target = given[0]
    control.halt_key(scope, target)  # validates the target
    return scope, target


async def _bus() -> Bus:
    settings = resolve(KernelSettings())
    if not settings.nats_url:
        raise AgentOSError("no AgentOS is running here: start one with `agentos up` (or set AGENTOS_NATS_URL)")
    return await Bus.connect(settings, source="cli")


def _tenant(bus: Bus, scope: str, target: str) -> str:
    return target if scope == "tenant" else bus.settings.tenant


async def do_halt(bus: Bus, scope: str, target: str, reason: str, by: str) -> control.Halt:
    """Turn the switch on, then record the request in the log."""
    halt = await control.set_halt(bus.js, control.Halt(scope, target, reason, by, time.time()))
    await bus.publish(bus.new(HaltRequested(scope=scope, target=target, reason=reason, requested_by=by),
                              tenant=_tenant(bus, scope, target), subject=f"control/{halt.key}",
                              principal=by))
    return halt


async def do_resume(bus: Bus, scope: str, target: str, by: str) -> bool:
    """Turn the switch off (if it was on), then record the request in the log."""
    was_on = await control.clear_halt(bus.js, scope, target)
    await bus.publish(bus.new(ResumeRequested(scope=scope, target=target, requested_by=by),
                              tenant=_tenant(bus, scope, target),
                              subject=f"control/{control.halt_key(scope, target)}", principal=by))
    return was_on


def _run(coro: object) -> object:
    from agentos_cli.main import run

    return run(coro)  # type: ignore[arg-type]


def halt(agent: Agent = None, workflow: Workflow = None, model: Model = None, tenant: Tenant = None,
         everything: All = False,
         reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail)")] = "operator halt",
         ) -> None:
    """Kill switch: stop an agent, a workflow, a model, a tenant or everything, at once, everywhere."""
    async def go() -> None:
        scope, target = pick_scope(agent, workflow, model, tenant, everything)
        bus = await _bus()
        try:
            found = await do_halt(bus, scope, target, reason, f"user:{getpass.getuser()}")
        finally:
            await bus.close()
        console.print(f"[bold red]halted[/] {found.key} (revision {found.revision}): {reason}")
    _run(go())


def resume(agent: Agent = None, workflow: Workflow = None, model: Model = None, tenant: Tenant = None,
           everything: All = False) -> None:
    """Lift a kill switch; paused work carries on from where it stopped."""
    async def go() -> None:
        scope, target = pick_scope(agent, workflow, model, tenant, everything)
        bus = await _bus()
        try:
            was_on = await do_resume(bus, scope, target, f"user:{getpass.getuser()}")
        finally:
            await bus.close()
        key = control.halt_key(scope, target)
        console.print(f"[bold green]resumed[/] {key}" if was_on else f"{key} was not halted")
    _run(go())


def halts() -> None:
    """The kill switches that are on."""
    async def go() -> None:
        bus = await _bus()
        try:
            found = await control.list_halts(bus.js)
        finally:
            await bus.close()
        if not found:
            console.print("no kill switch is on")
        for h in found:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.at))
            console.print(f"{h.key}  by {h.by} at {when}: {h.reason}")
    _run(go())


def register(app: typer.Typer) -> None:
    """Add `halt`, `resume` and `halts` to ``app``."""
    for command in (halt, resume, halts):
        app.command()(command)
