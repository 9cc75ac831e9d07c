"""AgentOS as an MCP server: the same tools over stdio (``agentos mcp``) and streamable HTTP (``/mcp``
on the gateway), each one the gateway route that does the same for HTTP callers (docs/mcp.md).

- :mod:`.tools`: the tools and resources (one implementation), :func:`build_server`.
- :mod:`.models`: their results, hence their ``outputSchema``.
- :mod:`.backend`: how a tool reaches the routes (a gateway URL, or the gateway's app in-process).
- :mod:`.http`: the ``/mcp`` endpoint (the gateway's API keys, refusals per the MCP auth spec).
- :mod:`.stdio`: ``agentos mcp``.
- :mod:`.contract`: ``contracts/mcp-tools.json`` (``agentos contracts``).

Exports load on first use: mounting ``/mcp`` costs the gateway no import of the SDK until the
first MCP request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentos_kernel.lazy import lazy_exports

if TYPE_CHECKING:
    from agentos_gateway.mcp_server.backend import InProcessGateway, RemoteGateway
    from agentos_gateway.mcp_server.http import McpEndpoint
    from agentos_gateway.mcp_server.tools import TOOLS, build_server

__all__ = ["TOOLS", "InProcessGateway", "McpEndpoint", "RemoteGateway", "build_server"]
__getattr__ = lazy_exports(
    __name__,
    {
        "InProcessGateway": "backend",
        "RemoteGateway": "backend",
        "McpEndpoint": "http",
        "TOOLS": "tools",
        "build_server": "tools",
    },
)
