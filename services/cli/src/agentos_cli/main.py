"""The `agentos` command: run the runtime, inspect the bus, and (with the services) run goals.

This module only declares the commands. Each command imports what it needs when it runs, so
starting the CLI costs typer and little else (``benchmarks/bench_cli_startup.py`` measures it;
``tests/cli/test_startup_imports.py`` keeps heavy modules out).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentos_cli import (
    agents_cmd,
    audit_cmd,
    connectors_cmd,
    control_cmd,
    ingress_cmd,
    mcp_cmd,
    output,
    policy_cmd,
    status_cmd,
)
from agentos_cli.connect import connected_bus, run

if TYPE_CHECKING:
    from agentos_kernel import Bus

app = typer.Typer(
    help="AgentOS: run, coordinate and govern fleets of LLM agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = output.console()
err = output.console(stderr=True)
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(connectors_cmd.app, name="connectors")
__all__ = ["app", "connected_bus", "run", "wait_for_services"]


@app.command()
def up(
    services: Annotated[
        str | None, typer.Option(help="Comma-separated services to run (default: all installed)")
    ] = None,
) -> None:
    """Start AgentOS: embedded NATS and Postgres unless configured, then every service, supervised."""
    from agentos_kernel import KernelSettings

    from agentos_cli import registry
    from agentos_cli.supervisor import run_up

    chosen = services.split(",") if services is not None else registry.available()
    for name in chosen:
        if name and name not in registry.SERVICES:
            err.print(f"[bold red]agentos: error:[/] unknown service {name!r}")
            raise typer.Exit(2)
    run(run_up(KernelSettings(), [n for n in chosen if n], err))


@app.command()
def service(name: str) -> None:
    """Run one service in the foreground (what `agentos up` and the containers run).

    With a local `agentos up` running in this state directory it takes that runtime's servers and
    this service's own NATS credentials from there (and says so); otherwise set the variables the
    error names.
    """
    from agentos_cli import service_cmd

    service_cmd.run_one(name, err)


@app.command()
def contracts(
    check: Annotated[bool, typer.Option("--check", help="Fail if contracts/ differs from the code")] = False,
    out: Annotated[Path, typer.Option(help="The contracts folder")] = Path("contracts"),
) -> None:
    """Generate contracts/ (JSON Schema per event type, AsyncAPI 3) from the typed catalogue."""
    from agentos_cli import contracts as contracts_mod

    if check:
        stale = contracts_mod.drift(out)
        if stale:
            err.print(
                f"[bold red]agentos: contracts are out of date:[/] {', '.join(stale)}; run `agentos contracts`",
                soft_wrap=True,
            )
            raise typer.Exit(1)
        console.print(f"contracts/ matches the code ({len(contracts_mod.render())} files)")
        return
    try:
        written = contracts_mod.write(out)
    except contracts_mod.ContractBreak as exc:
        err.print(f"[bold red]agentos: contracts not written:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"wrote {len(written)} files to {out}/")


SEED_GOAL = "Research our three main competitors and draft a summary report"


@app.command()
def submit(
    goal: str,
    workflow: Annotated[str | None, typer.Option(help="Run a declared workflow instead of the LLM planner")] = None,
    capability: Annotated[
        str | None,
        typer.Option(help="The capability the goal needs (e.g. triage); refused unless a registered agent has it"),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant (default: AGENTOS_TENANT)")] = None,
    watch_it: Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the goal to its outcome")] = True,
) -> None:
    """Submit a goal; with --watch (the default) follow it live and print the outcome. A capability
    or workflow that no registered agent or orchestrator has is refused, listing the known ones."""
    from agentos_cli import goals as goals_mod

    async def go() -> bool:
        bus = await connected_bus()
        try:
            await goals_mod.check_servable(bus, capability=capability, workflow=workflow)
            event = await goals_mod.submit(
                bus, goal, tenant=tenant or bus.settings.tenant, workflow=workflow, capability=capability
            )
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
    """Follow a goal live (from its first event) until it completes or fails.

    On a terminal it redraws a table; off one (CI logs, pipes) it prints one line per change. A
    goal waiting for a human approval says so, with the `agentos approve` command to run.
    """
    from agentos_kernel import InvalidInput

    from agentos_cli import goals as goals_mod
    from agentos_cli.replay_record import goal_exists

    async def go() -> bool:
        bus = await connected_bus()
        try:
            if not await goal_exists(bus, goal_id):
                raise InvalidInput(f"no goal {goal_id!r} in the event log (agentos submit prints a goal's id)")
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
    from agentos_kernel import KernelSettings

    from agentos_cli.service_cmd import run_demo

    if not run(run_demo(KernelSettings(), goal, timeout, console, err)):
        raise typer.Exit(1)


async def wait_for_services(bus: Bus, services: list[str], timeout: float = 60.0) -> None:
    """Until every service reports healthy (and the specialists have announced their agents)."""
    from agentos_cli.service_cmd import wait_for_services as wait

    await wait(bus, services, timeout)


status_cmd.register(app)
app.command()(agents_cmd.agents)
ingress_cmd.register(app)
mcp_cmd.register(app)
policy_cmd.register(app)
control_cmd.register(app)
