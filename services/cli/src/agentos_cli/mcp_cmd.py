"""`agentos mcp`: AgentOS's MCP server over stdio (:mod:`agentos_gateway.mcp_server.stdio`)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from agentos_cli.connect import run


def register(app: typer.Typer) -> None:
    """Add `agentos mcp` to ``app``."""

    @app.command()
    def mcp(
        gateway: Annotated[
            str | None, typer.Option(help="Gateway URL (default: AGENTOS_GATEWAY_URL, or the running gateway's)")
        ] = None,
        key: Annotated[str | None, typer.Option(help="API key (default: AGENTOS_GATEWAY_KEY)")] = None,
    ) -> None:
        """Serve AgentOS as an MCP server on stdin/stdout (for an IDE assistant or an agent framework).

        Tools: submit_goal, goal_status, goal_report, list_approvals, decide_approval, list_halts,
        halt, resume, audit_query, goal_trace; resources: goal reports and audit trails. Each tool
        calls the gateway route that does the same, with the key's roles and principal; the
        gateway also serves them itself at /mcp (streamable HTTP). See docs/mcp.md.
        """
        from agentos_cli.ingress_cmd import gateway_url

        url = gateway_url(gateway)
        from agentos_gateway.mcp_server.stdio import serve_stdio

        run(serve_stdio(url, key or os.environ.get("AGENTOS_GATEWAY_KEY")))
