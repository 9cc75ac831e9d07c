"""Connector tests: the policy service in-process (the policy in ``policies/mcp``), the offline
model over HTTP, and real MCP servers over real transports (stdio children, streamable HTTP)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_policy.service import setup
from agentos_specialist.connectors.ring import ConnectorRing
from agentos_specialist.connectors.spec import Connector, load_connectors, parse_connector, shipped_dir
from agentos_specialist.runner import Outcome, Progress, run_agent
from agentos_specialist.tools import DocumentIndex, ToolContext, build_tools

from tests.policy.conftest import charter, context_event, no_snapshot

POLICY = Path(__file__).parent / "policies" / "mcp"
SERVERS = Path(__file__).parent / "mcp_servers"


@pytest.fixture(scope="module")
async def policy_service(settings: KernelSettings) -> AsyncIterator[ServiceContext]:
    saved = os.environ.get("AGENTOS_POLICY_DIR")
    os.environ["AGENTOS_POLICY_DIR"] = str(POLICY)
    ctx = await start_service("policy", setup, settings, database=True)
    try:
        yield ctx
    finally:
        await stop_service(ctx)
        if saved is None:
            os.environ.pop("AGENTOS_POLICY_DIR", None)
        else:
            os.environ["AGENTOS_POLICY_DIR"] = saved


def connector(text: str) -> Connector:
    return parse_connector(text, "<test>")


def ring(bus: Bus, *extra: Connector) -> ConnectorRing:
    """The shipped connectors (builtin, time, fetch) plus ``extra``, as a specialist would hold them."""
    found = load_connectors(shipped_dir()) | {c.name: c for c in extra}
    return ConnectorRing(bus, found, build_tools(DocumentIndex.from_folder()), "test-instance")


async def run(
    llm: Any,
    the_ring: ConnectorRing,
    bus: Bus,
    tenant: str,
    goal: str,
    agent: str,
    tools: tuple[str, ...],
    **extra: Any,
) -> tuple[Outcome, Progress, ToolContext]:
    """One task of ``agent`` through the real agent loop with the ring's tools for ``tools``."""
    event = context_event(bus, tenant, agent, goal, f"{goal}/r0/s1/a1", extra.pop("text", "Do the task."))
    progress = extra.pop("progress", None) or Progress(messages=[dict(m) for m in event.data.messages])
    resolved = await the_ring.resolve(tools)
    ctx = ToolContext(bus, event)
    outcome = await run_agent(llm, charter(agent, tools, **extra), progress, resolved, ctx, no_snapshot)
    return outcome, progress, ctx
