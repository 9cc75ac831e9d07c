"""`agentos connectors list|test|approve`: the MCP servers agents use as tools.

``list`` connects to every connector's server (the shipped ones and ``AGENTOS_CONNECTORS_DIR``'s)
and shows each tool with its state — ``offered``, ``quarantined`` (its definition changed since it
was approved, or its description addresses the model), ``unclassified`` (the connector file does
not classify it, so no agent is offered it) or ``new`` (no specialist has seen it yet) — against
the pins every specialist shares. ``test`` connects to one and exits 1 if it cannot.
``approve`` pins a tool's current definition (the one its server lists now), so the specialists
offer it again, and records who approved it (``connector.approved``).
"""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentos_cli import output
from agentos_cli.connect import connected_bus, run

if TYPE_CHECKING:
    from agentos_kernel import Bus
    from agentos_specialist.connectors.spec import Connector

app = typer.Typer(help="MCP connectors: the servers agents use as tools.", no_args_is_help=True)
console = output.console()
err = output.console(stderr=True)


def _connectors() -> dict[str, Connector]:
    from agentos_specialist.connectors.spec import load_connectors, shipped_dir
    from agentos_specialist.service import SpecialistSettings

    return load_connectors(shipped_dir(), SpecialistSettings().connectors_dir)


async def _survey(bus: Bus, spec: Connector) -> tuple[Any, list[Any]]:
    """(the server, its tools with their states); the server is left running for the caller to stop."""
    from agentos_specialist.connectors.pins import PinStore
    from agentos_specialist.connectors.ring import survey
    from agentos_specialist.connectors.server import McpServer

    server = McpServer(spec)
    listing = await server.tools()
    return server, await survey(spec, listing, PinStore(bus), pin_as=None)


def _print(spec: Connector, server: Any, surveyed: list[Any]) -> None:
    client = server.client
    info = client.server_info if client is not None else None
    about = f"{info.name} {info.version}" if info is not None else "?"
    protocol = client.protocol_version if client is not None else "?"
    console.print(f"[bold]{spec.name}[/bold] ({spec.transport}, {about}, MCP {protocol})", highlight=False)
    for _, found, cls in surveyed:
        what = f"{cls.access}, {cls.risk} risk, {'/'.join(cls.data_classes)}" if cls is not None else "-"
        extra = f"  {found.reason}" if found.reason else ""
        console.print(f"  {found.state:<12} {found.name:<32} {what:<36} {found.definition_hash[:19]}{extra}")


async def _list(only: str | None) -> int:
    from agentos_specialist.connectors.server import ConnectorFailed

    bus = await connected_bus()
    problems = 0
    try:
        for spec in _connectors().values():
            if spec.builtin or (only is not None and spec.name != only):
                continue
            try:
                server, surveyed = await _survey(bus, spec)
            except ConnectorFailed as exc:
                err.print(f"PROBLEM {spec.name}: {exc}", highlight=False)
                problems += 1
                continue
            try:
                _print(spec, server, surveyed)
            finally:
                await server.close()
    finally:
        await bus.close()
    return problems


@app.command("list")
def list_() -> None:
    """Every connector's tools and their state (offered, quarantined, unclassified, new)."""
    if run(_list(None)):
        raise typer.Exit(1)


@app.command()
def test(name: Annotated[str, typer.Argument(help="The connector (its file's `name`)")]) -> None:
    """Start (or reach) one connector's server, negotiate, list its tools; exit 1 if it fails."""
    if name not in _connectors():
        raise typer.BadParameter(f"no connector {name!r} (known: {', '.join(sorted(_connectors()))})")
    if run(_list(name)):
        raise typer.Exit(1)


async def _approve(tool: str, user: str, expected: str | None) -> str:
    from agentos_kernel.exceptions import InvalidInput
    from agentos_schemas.events.connectors import ConnectorApproved
    from agentos_specialist.connectors.pins import PinStore

    connector, _, name = tool.partition(".")
    spec = _connectors().get(connector)
    if spec is None or not name or spec.builtin:
        raise InvalidInput(f"{tool!r} names no connector tool (<connector>.<tool>)")
    bus = await connected_bus()
    try:
        server, surveyed = await _survey(bus, spec)
        await server.close()
        found = next((d for t, d, _ in surveyed if t.name == name), None)
        if found is None:
            raise InvalidInput(f"the server of {connector!r} lists no tool {name!r}")
        if expected is not None and expected != found.definition_hash:
            raise InvalidInput(f"{tool} is now {found.definition_hash}, not {expected}: nothing approved")
        await PinStore(bus).pin(connector, name, found.definition_hash, user)
        approved = ConnectorApproved(
            connector=connector,
            tool=tool,
            definition_hash=found.definition_hash,
            previous_hash=found.pinned_hash,
            approved_by=user,
        )
        await bus.publish(bus.new(approved, tenant="default", principal=f"user:{user}"))
        return found.definition_hash
    finally:
        await bus.close()


@app.command()
def approve(
    tool: Annotated[str, typer.Argument(help="The tool, as agents name it: <connector>.<tool>")],
    as_user: Annotated[str | None, typer.Option("--as", help="Who approves (default: the login name)")] = None,
    expected: Annotated[
        str | None, typer.Option("--hash", help="Approve only if the definition has this hash (from `list`)")
    ] = None,
) -> None:
    """Pin a tool's current definition: a quarantined tool is offered to agents again."""
    user = as_user or getpass.getuser()
    hash_ = run(_approve(tool, user, expected))
    console.print(f"approved {tool} at {hash_} (by {user})", highlight=False)
