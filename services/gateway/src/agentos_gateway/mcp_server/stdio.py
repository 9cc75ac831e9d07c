"""``agentos mcp``: AgentOS's MCP server over stdio, for an IDE assistant or an agent framework that
starts its MCP servers as subprocesses.

It reaches AgentOS through a running gateway (``--gateway`` / ``AGENTOS_GATEWAY_URL``, else the
gateway ``agentos up`` started) with one API key (``--key`` / ``AGENTOS_GATEWAY_KEY``), so every
tool call is an HTTP request to the gateway route that does the same, under that key's roles and
principal, exactly as ``/mcp`` does (:mod:`.backend`). Standard output carries only MCP messages.
"""

from __future__ import annotations

from agentos_gateway.mcp_server.backend import RemoteGateway
from agentos_gateway.mcp_server.tools import build_server


async def serve_stdio(url: str, api_key: str | None) -> None:
    """Serve the tools on stdin/stdout until the client closes them."""
    backend = RemoteGateway(url, api_key)
    try:
        await build_server(backend).run_stdio_async()
    finally:
        await backend.aclose()


__all__ = ["serve_stdio"]
