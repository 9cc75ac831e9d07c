"""Connector facts: the MCP servers a specialist uses as tools, what they offer and their health.

A connector (``connectors/*.yaml``) names an MCP server and classifies its tools. When the
specialist runtime (re)discovers a server's tools it pins their exact definitions (name,
description, input and output schema) by hash and states them here; a tool whose definition
changed since it was pinned is quarantined — not offered to any agent — until an operator approves
the new definition (``agentos connectors approve``, ``connector.approved``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agentos_schemas.events._base import EventData


class ToolDefinition(BaseModel):
    """One tool as a server lists it, with the hash it is pinned by."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    name: str
    """The tool's name as agents see it: ``<connector>.<tool>``."""
    definition_hash: str
    """sha256 of the canonical JSON of the server's definition (name, description, schemas)."""
    state: Literal["offered", "quarantined", "unclassified", "new"]
    """``quarantined``: its definition differs from the pinned one, or its description addresses
    the model; ``unclassified``: the connector file does not classify it (default deny); ``new``:
    never seen by a specialist (only ``agentos connectors list`` reports it). Only ``offered``
    tools are offered to agents."""
    pinned_hash: str = ""
    """The hash the operator approved (differs from ``definition_hash`` when quarantined)."""
    reason: str = ""
    """Why it is quarantined."""


class ConnectorAnnounced(EventData):
    """A specialist runtime discovered (or re-discovered) a connector's tools."""

    event_name = "connector.announced"

    connector: str
    instance: str
    """The specialist replica that connected."""
    server: str = ""
    """The server's name and version as it reports them."""
    protocol_version: str = ""
    """The MCP protocol revision negotiated (``2025-11-25`` or ``2026-07-28``)."""
    transport: Literal["stdio", "http", "builtin"]
    listing_hash: str
    """sha256 over every tool's definition hash: changes whenever any definition changes."""
    tools: tuple[ToolDefinition, ...] = ()


class ConnectorDegraded(EventData):
    """A connector's circuit breaker opened: its calls fail at once until ``retry_at``."""

    event_name = "connector.degraded"

    connector: str
    instance: str
    reason: str
    failures: int = Field(ge=0)
    """Consecutive failures that opened the breaker."""
    retry_after_s: float = Field(ge=0)


class ConnectorApproved(EventData):
    """An operator approved a tool's current definition: it is pinned and offered again."""

    event_name = "connector.approved"

    connector: str
    tool: str
    """``<connector>.<tool>``."""
    definition_hash: str
    previous_hash: str = ""
    approved_by: str


class ToolResultStored(EventData):
    """A tool result too large for a prompt: the agent saw its first part; the whole (redacted)
    result is kept here (claim-checked into the object store when large)."""

    event_name = "tool.result_stored"

    task_id: str
    goal_id: str = ""
    agent: str = ""
    tool: str
    size_bytes: int = Field(ge=0)
    content: str
    """The whole result, redacted."""
