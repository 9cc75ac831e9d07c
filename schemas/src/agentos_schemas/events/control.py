"""Control events: specialists announcing themselves, operators halting and resuming work."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentos_schemas.charter import Charter
from agentos_schemas.events._base import EventData


class AgentAnnounced(EventData):
    """A specialist replica is up and can take work for these capabilities."""

    event_name = "agent.announced"

    agent: str
    version: str
    capabilities: tuple[str, ...]
    instance: str
    capacity: int = Field(default=4, ge=1)
    """How many tasks the replica runs at once."""
    charter: Charter
    """The full charter, so other services learn the agent from the log alone."""


class WorkflowDeclared(EventData):
    """The orchestrator runs this declared workflow: submitters learn from the log which workflows
    exist and which capabilities their steps need."""

    event_name = "workflow.declared"

    name: str
    description: str = ""
    capabilities: tuple[str, ...]
    """Every capability its steps need, sorted."""
    steps: int = Field(ge=1)
    """How many steps it has."""


class AgentRetired(EventData):
    event_name = "agent.retired"

    agent: str
    instance: str


Scope = Literal["agent", "workflow", "model", "tenant", "all"]


class HaltRequested(EventData):
    """An operator asks to stop an agent, a workflow, a model, a tenant or everything."""

    event_name = "control.halt_requested"

    scope: Scope
    target: str = "*"
    reason: str
    requested_by: str


class ResumeRequested(EventData):
    event_name = "control.resume_requested"

    scope: Scope
    target: str = "*"
    requested_by: str
