"""What the fleet can do, learned from the log alone: the capabilities announced agents serve
(``agent.announced`` / ``agent.retired``) and the workflows the orchestrator runs
(``workflow.declared``). Submitters (the gateway's ``POST /goals``, ``agentos submit``) check a
goal against it, so a goal naming a capability or workflow nobody knows is refused at once with
the list of known ones, instead of waiting for an agent that will never come."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentos_schemas import Event
from agentos_schemas.events import AgentAnnounced, WorkflowDeclared

from agentos_kernel.bus import Bus
from agentos_kernel.replay import replay

#: ``agent.retired`` is not read: a retired replica's agent stays registered.
SUBJECTS = ["agentos.*.agent.announced", "agentos.*.workflow.declared"]


@dataclass
class Fleet:
    """Capabilities by agent and workflows by name, folded from the log (latest statement wins).
    A capability stays known after its agent's replicas retire: it is registered, not up."""

    agents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    workflows: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def apply(self, event: Event[Any]) -> None:
        data = event.data
        if isinstance(data, AgentAnnounced):
            self.agents[data.agent] = data.capabilities
        elif isinstance(data, WorkflowDeclared):
            self.workflows[data.name] = data.capabilities

    @property
    def capabilities(self) -> set[str]:
        return {c for caps in self.agents.values() for c in caps}

    def refusal(self, *, capability: str | None = None, workflow: str | None = None) -> Refusal | None:
        """Why a goal naming ``capability`` and/or ``workflow`` cannot be served; None if it can."""
        known = tuple(sorted(self.capabilities))
        listing = ", ".join(known) if known else "none (no agent has been announced yet)"
        if capability is not None and capability not in known:
            return Refusal(
                "unknown_capability", f"unknown capability {capability!r}; known capabilities: {listing}", known
            )
        if workflow is None:
            return None
        if workflow not in self.workflows:
            names = tuple(sorted(self.workflows))
            return Refusal(
                "unknown_workflow",
                f"unknown workflow {workflow!r}; known workflows: {', '.join(names) or 'none declared'}",
                known,
                names,
            )
        missing = [c for c in self.workflows[workflow] if c not in known]
        if missing:
            needs = ", ".join(map(repr, missing))
            return Refusal(
                "unserved_capability",
                f"workflow {workflow!r} has steps needing {needs}, which no agent"
                f" serves; known capabilities: {listing}",
                known,
            )
        return None


@dataclass(frozen=True)
class Refusal:
    """Why a goal is refused at submit: a code, the message, what is known."""

    code: str
    """``unknown_capability``, ``unknown_workflow``, or ``unserved_capability`` (a workflow step's)."""
    detail: str
    capabilities: tuple[str, ...]
    workflows: tuple[str, ...] = ()


async def read_fleet(bus: Bus) -> Fleet:
    """The fleet as the log states it now."""
    fleet = Fleet()
    await replay(bus, SUBJECTS, fleet.apply, timeout=30.0)
    return fleet
