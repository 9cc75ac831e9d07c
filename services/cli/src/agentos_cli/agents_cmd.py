"""`agentos agents`: the fleet's agents as the log and the running replicas state them.

Each agent announced in the log (``agent.announced``, latest statement wins) with its version,
capabilities, model and tools; how many of its replicas are up now (specialist instances that
announced it, did not retire it, and report health), and whether a kill switch stops it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentos_cli import output
from agentos_cli.connect import connected_bus, run

if TYPE_CHECKING:
    from agentos_kernel import Bus

console = output.console()
SUBJECTS = ["agentos.*.agent.announced", "agentos.*.agent.retired"]
FRESH_S = 15.0
"""A replica is up while its last heartbeat (every 5 s) is younger than this."""
COLUMNS = ("agent", "version", "state", "replicas up", "capabilities", "model", "tools", "capacity", "halted by")


@dataclass
class Known:
    """One agent as the log states it: its latest announcement and its replicas' instances."""

    announced: Any
    instances: set[str] = field(default_factory=set)
    """Replicas that announced it and have not retired it (cleanly stopped)."""


def fold(fleet: dict[str, Known], event: Any) -> None:
    from agentos_schemas.events import AgentAnnounced, AgentRetired

    data = event.data
    if isinstance(data, AgentAnnounced):
        known = fleet.setdefault(data.agent, Known(data))
        known.announced = data
        known.instances.add(data.instance)
    elif isinstance(data, AgentRetired) and data.agent in fleet:
        fleet[data.agent].instances.discard(data.instance)


def rows(fleet: dict[str, Known], live: set[str], halts: list[Any]) -> list[dict[str, Any]]:
    """A row per agent; ``live`` is the instances reporting health now."""
    out = []
    for name in sorted(fleet):
        known = fleet[name]
        a = known.announced
        up = len(known.instances & live)
        stopping = [h for h in halts if h.scope == "all" or (h.scope == "agent" and h.target == name)]
        state = "halted" if stopping else "up" if up else "down" if known.instances else "retired"
        out.append(
            {
                "agent": name,
                "version": a.version,
                "state": state,
                "replicas up": up,
                "capabilities": ", ".join(a.capabilities),
                "model": a.charter.model,
                "tools": ", ".join(a.charter.tools) or "-",
                "capacity": a.capacity,
                "halted by": "; ".join(
                    f"{h.key} ({h.by}: {h.reason})" if h.reason else f"{h.key} ({h.by})" for h in stopping
                ),
            }
        )
    return out


async def live_instances(bus: Bus) -> set[str]:
    """The specialist instances whose health record is fresh (read as `agentos status` reads them);
    health records that cannot be listed are an outage, not "no replica up"."""
    import time

    from agentos_kernel.exceptions import Unavailable

    from agentos_cli.inspect_bus import health_records

    records, unreadable = await health_records(bus)
    if unreadable is not None:
        raise Unavailable("the health records (NATS)", unreadable)
    return {
        str(r.get("instance", ""))
        for r in records
        if r.get("service") == "specialist"
        and r.get("status") != "unreadable"
        and time.time() - float(r.get("ts") or 0) < FRESH_S
    }


async def collect(bus: Bus) -> list[dict[str, Any]]:
    from agentos_kernel import control
    from agentos_kernel.replay import replay

    fleet: dict[str, Known] = {}
    await replay(bus, SUBJECTS, lambda e: fold(fleet, e), timeout=30.0)
    live = await live_instances(bus)
    return rows(fleet, live, await control.list_halts(bus.js))


def agents(fmt: output.Format = "table", as_json: output.Json = False) -> None:
    """The agents the fleet has: version, state, replicas up, capabilities, model, tools.

    State: ``up`` (a replica reports health), ``halted`` (a kill switch covers it), ``retired``
    (every replica stopped cleanly), ``down`` (replicas that never retired report no health: they
    crashed or hang); exits 1 with a PROBLEM line for an agent that is down."""
    import typer

    form = output.chosen(fmt, as_json)

    async def go() -> list[dict[str, Any]]:
        bus = await connected_bus()
        try:
            return await collect(bus)
        finally:
            await bus.close()

    found = run(go())
    down = [r["agent"] for r in found if r["state"] == "down"]
    notes = [
        f"[bold red]PROBLEM[/] agent {name!r} has no replica up: its specialist crashed or hangs (it did not retire)"
        for name in down
    ]
    output.emit(
        console,
        [output.Section("Agents", found, columns=COLUMNS, empty="(no agent has been announced)")],
        form,
        notes=notes or [f"{len(found)} agent(s)"],
    )
    if down:
        raise typer.Exit(1)
