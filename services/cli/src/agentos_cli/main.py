"""The `agentos` command: run the runtime, inspect the bus, and (with the services) run goals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from agentos_cli import audit_cmd, control_cmd, ingress_cmd, inspect_bus, policy_cmd, registry
from agentos_cli import contracts as contracts_mod
from agentos_cli import goals as goals_mod
from agentos_cli.errors import fail
from agentos_cli.replay_record import goal_exists
from agentos_cli.supervisor import Runtime, run_up
from agentos_kernel import AgentOSError, Bus, BusUnavailable, KernelSettings
from agentos_kernel.runtime import resolve
from rich.console import Console

app = typer.Typer(help="AgentOS: run, coordinate and govern fleets of LLM agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")
app.add_typer(audit_cmd.app, name="audit")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command; AgentOS errors become one line on stderr and exit code 2, never a traceback."""
    try:
        return asyncio.run(coro)
    except AgentOSError as exc:
        fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def connected_bus(source: str = "cli") -> Bus:
    settings = resolve(KernelSettings())
    if not settings.nats_url:
        raise AgentOSError("no AgentOS is running here: start one with `agentos up` (or set AGENTOS_NATS_URL)")
    return await Bus.connect(settings, source=source)


@app.command()
def up(
    services: Annotated[str | None, typer.Option(help="Comma-separated services to run (default: all installed)")]
    = None,
) -> None:
    """Start AgentOS: embedded NATS and Postgres unless configured, then every service, supervised."""
    chosen = services.split(",") if services is not None else registry.available()
    for name in chosen:
        if name and name not in registry.SERVICES:
            err.print(f"[bold red]agentos: error:[/] unknown service {name!r}")
            raise typer.Exit(2)
    run(run_up(KernelSettings(), [n for n in chosen if n], err))


@app.command()
def service(name: str) -> None:
    """Run one service in the foreground (what `agentos up` and the containers run)."""
    logging.basicConfig(level=os.environ.get("AGENTOS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        module = registry.load(name)
    except (KeyError, ImportError) as exc:
        fail(exc)
    run(module.main(KernelSettings()))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    stall_after: Annotated[float, typer.Option(help="Seconds without progress, with work waiting, that count as "
                                                    "stalled")] = inspect_bus.health.STALL_S,
    max_lag: Annotated[int, typer.Option(help="Messages a projection may trail the log by")]
    = inspect_bus.health.MAX_LAG,
) -> None:
    """Dependencies, streams, consumers and projections against the log's last sequence, dead
    letters, each service's health; exits 1 with a PROBLEM line for anything unhealthy."""
    async def go() -> dict[str, Any]:
        try:
            bus = await connected_bus()
        except BusUnavailable as exc:
            return await inspect_bus.unreachable_status(resolve(KernelSettings()), str(exc))
        try:
            return await inspect_bus.collect_status(bus, judge=True, stall_s=stall_after, max_lag=max_lag)
        finally:
            await bus.close()
    report = run(go())
    if as_json:
        console.print_json(json.dumps(report))
    else:
        inspect_bus.render_status(report, console)
    if report["problems"]:
        raise typer.Exit(1)


@app.command()
def tail(
    subject: Annotated[str, typer.Option(help="Subject filter, e.g. agentos.acme.goal.*")] = "agentos.>",
    from_start: Annotated[bool, typer.Option("--all", help="Start from the first event, not from now")] = False,
    dlq: Annotated[bool, typer.Option("--dlq", help="Follow the dead-letter stream instead")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many events")] = None,
    idle_exit: Annotated[float | None, typer.Option(help="Stop after this many idle seconds")] = None,
) -> None:
    """Follow the event log live."""
    if dlq and subject == "agentos.>":
        subject = "dlq.agentos.>"
    async def go() -> None:
        bus = await connected_bus()
        try:
            await inspect_bus.tail(bus, console, subject=subject, from_start=from_start, dlq=dlq,
                                   limit=limit, idle_exit=idle_exit)
        finally:
            await bus.close()
    run(go())


@app.command()
def contracts(
    check: Annotated[bool, typer.Option("--check", help="Fail if contracts/ differs from the code")] = False,
    out: Annotated[Path, typer.Option(help="The contracts folder")] = Path("contracts"),
) -> None:
    """Generate contracts/ (JSON Schema per event type, AsyncAPI 3) from the typed catalogue."""
    if check:
        stale = contracts_mod.drift(out)
        if stale:
            err.print(f"[bold red]agentos: contracts are out of date:[/] {', '.join(stale)}; "
                      "run `agentos contracts`", soft_wrap=True)
            raise typer.Exit(1)
        console.print(f"contracts/ matches the code ({len(contracts_mod.render())} files)")
        return
    written = contracts_mod.write(out)
    console.print(f"wrote {len(written)} files to {out}/")


SEED_GOAL = "Research our three main competitors and draft a summary report"


@app.command()
def submit(
    goal: str,
    workflow: Annotated[str | None, typer.Option(help="Run a declared workflow instead of the LLM planner")] = None,
    capability: Annotated[str | None, typer.Option(
        help="The capability the goal needs (e.g. triage); refused unless a registered agent has it")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant (default: AGENTOS_TENANT)")] = None,
    watch_it: Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the goal to its outcome")] = True,
) -> None:
    """Submit a goal; with --watch (the default) follow it live and print the outcome. A capability
    or workflow that no registered agent or orchestrator has is refused, listing the known ones."""
    async def go() -> bool:
        bus = await connected_bus()
        try:
            await goals_mod.check_servable(bus, capability=capability, workflow=workflow)
            event = await goals_mod.submit(bus, goal, tenant=tenant or bus.settings.tenant, workflow=workflow,
                                           capability=capability)
            console.print(f"submitted goal [bold]{event.data.goal_id}[/]")
            if not watch_it:
                return True
            view = await goals_mod.watch(bus, event.data.goal_id, console)
            return goals_mod.render_outcome(view, console)
        finally:
            await bus.close()
    if not run(go()):
        raise typer.Exit(1)


@app.command()
def watch(goal_id: str) -> None:
    """Follow a goal live (from its first event) until it completes or fails."""
    async def go() -> bool:
        bus = await connected_bus()
        try:
            if not await goal_exists(bus, goal_id):
                raise AgentOSError(f"no goal {goal_id!r} in the event log (agentos submit prints a goal's id)")
            view = await goals_mod.watch(bus, goal_id, console)
            return goals_mod.render_outcome(view, console)
        finally:
            await bus.close()
    if not run(go()):
        raise typer.Exit(1)


@app.command()
def demo(
    goal: Annotated[str, typer.Option(help="The goal to run")] = SEED_GOAL,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the outcome")] = 300.0,
) -> None:
    """The main job, end to end on the embedded default: start everything, run the seed goal, stop.

    Run it twice: the second run recalls the first run's findings from episodic memory.
    """
    if not run(run_demo(KernelSettings(), goal, timeout)):
        raise typer.Exit(1)


async def run_demo(settings: KernelSettings, goal: str, timeout: float) -> bool:
    runtime = Runtime(settings, registry.available(), logs=settings.state_dir / "logs", console=err)
    try:
        resolved = await runtime.start()
        console.print(f"AgentOS started: services {', '.join(runtime.services)}; state in {resolved.state_dir}")
        if runtime.offline is not None:
            console.print("[bold yellow]Using the OFFLINE deterministic model[/] (shipped with AgentOS, served over "
                          f"the OpenAI API at {runtime.offline.url}; set AGENTOS_MODELS for real models)")
        bus = await Bus.connect(resolved, source="cli")
        try:
            await wait_for_services(bus, runtime.services)
            event = await goals_mod.submit(bus, goal, tenant=resolved.tenant)
            console.print(f"goal [bold]{event.data.goal_id}[/]: {goal}")
            view = await goals_mod.watch(bus, event.data.goal_id, console, timeout=timeout)
            return goals_mod.render_outcome(view, console)
        finally:
            await bus.close()
    finally:
        await runtime.stop()


async def wait_for_services(bus: Bus, services: list[str], timeout: float = 60.0) -> None:
    """Until every service reports healthy (and the specialists have announced their agents)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        report = await inspect_bus.collect_status(bus)
        up = {r.get("service") for r in report["services"] if r.get("age_s", 99) < 15}
        if set(services) <= up:
            return
        await asyncio.sleep(0.3)
    raise AgentOSError(f"services did not come up within {timeout:.0f}s; see {bus.settings.state_dir}/logs")


ingress_cmd.register(app)
policy_cmd.register(app)
control_cmd.register(app)
