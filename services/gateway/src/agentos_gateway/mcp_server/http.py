"""``/mcp`` on the gateway: AgentOS's MCP server over streamable HTTP, behind the gateway's API keys.

- **Authentication** is the gateway's (:class:`~agentos_gateway.auth.ApiKeys`): ``Authorization:
  Bearer <key>`` (or ``X-API-Key``); with no keys configured, loopback clients only, as for every
  route. A missing or bad key is refused before any MCP message is read, as the MCP authorization
  spec asks: 401 with ``WWW-Authenticate: Bearer … resource_metadata="…"`` naming the protected
  resource metadata (RFC 9728) served at ``/.well-known/oauth-protected-resource/mcp``.
- **Authorisation** is each route's: a tool call runs the gateway route it stands for, in-process,
  with the caller's key (:class:`~agentos_gateway.mcp_server.backend.InProcessGateway`), so a role
  that may not use it gets the route's 403 as the tool's error.
- **Stateless** streamable HTTP (the SDK's session manager with ``stateless=True``): every POST
  stands alone, so any gateway worker or replica answers any request; protocol revisions
  2025-11-25 (initialize handshake) and 2026-07-28 (per-request envelope) are both served.
- **Started on first use**: the SDK is imported and its session manager started by the first
  ``/mcp`` request, and stopped with the gateway's HTTP server (:meth:`McpEndpoint.stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from agentos_kernel.tasks import cancel_and_wait
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from agentos_gateway.auth import presented_key
from agentos_gateway.gateway import Gateway
from agentos_gateway.mcp_server.backend import CALLER
from agentos_gateway.problems import Problem

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource" + PATH
_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def resource_metadata(request: Request) -> dict[str, Any]:
    """The protected resource metadata of ``/mcp`` (RFC 9728). Its tokens are the gateway's API
    keys, issued by its operator, so it names no authorization server."""
    base = str(request.base_url).rstrip("/")
    return {
        "resource": base + PATH,
        "resource_name": "AgentOS",
        "bearer_methods_supported": ["header"],
        "resource_documentation": base + "/docs",
    }


class McpEndpoint:
    """The ASGI app serving ``/mcp`` for ``gw``; tools call ``app`` (the gateway's routes)."""

    def __init__(self, gw: Gateway, app: ASGIApp) -> None:
        self.gw = gw
        self.app = app
        self._manager: StreamableHTTPSessionManager | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
        client = scope.get("client")
        host = client[0] if client else None
        try:
            self.gw.keys.identify(key, host)
        except Problem as problem:
            await self._refuse(problem, scope, receive, send)
            return
        scope[CALLER] = (key, host)
        manager = await self._started()
        await manager.handle_request(scope, receive, send)

    async def _refuse(self, problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
        """401 with the challenge the MCP authorization spec asks for (error and resource metadata)."""
        request = Request(scope, receive)
        metadata = str(request.base_url).rstrip("/") + METADATA_PATH
        parts = [f'resource_metadata="{metadata}"']
        if problem.code == "invalid_api_key":  # a key was sent; none sent: no error code (RFC 6750 §3)
            parts[:0] = ['error="invalid_token"', f'error_description="{problem.detail}"']
        self.gw.rejected += 1
        response = problem.response(PATH)
        response.headers["WWW-Authenticate"] = "Bearer " + ", ".join(parts)
        await response(scope, receive, send)

    async def _started(self) -> StreamableHTTPSessionManager:
        if self._manager is not None:
            return self._manager
        async with self._lock:
            if self._manager is None:
                manager = self._build()
                ready = asyncio.Event()
                self._task = asyncio.create_task(self._run(manager, ready), name="gateway-mcp")
                await ready.wait()
                self._manager = manager
        return self._manager

    def _build(self) -> StreamableHTTPSessionManager:
        from mcp.server.transport_security import TransportSecuritySettings

        from agentos_gateway.mcp_server.backend import InProcessGateway
        from agentos_gateway.mcp_server.tools import build_server

        # Without keys anyone on loopback is let in, so a web page must not reach /mcp through a
        # rebound DNS name: Host and Origin have to be loopback ones (the MCP transport spec's rule).
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=self.gw.keys.anonymous,
            allowed_hosts=_LOOPBACK_HOSTS,
            allowed_origins=_LOOPBACK_ORIGINS,
        )
        server = build_server(InProcessGateway(self.app))
        server.streamable_http_app(streamable_http_path=PATH, stateless_http=True, transport_security=security)
        return server.session_manager

    async def _run(self, manager: StreamableHTTPSessionManager, ready: asyncio.Event) -> None:
        async with manager.run():
            ready.set()
            await self._stopping.wait()

    @property
    def started(self) -> bool:
        """Whether the session manager runs (from the first ``/mcp`` request until :meth:`stop`)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop the session manager (requests still in it are cancelled)."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            await cancel_and_wait(self._task)
            self._task = None


def add_mcp_routes(app: Any, gw: Gateway) -> McpEndpoint:
    """Serve ``/mcp`` and its protected resource metadata on the gateway's FastAPI ``app``."""
    endpoint = McpEndpoint(gw, app)
    app.router.add_route(PATH, endpoint, include_in_schema=False)

    async def metadata(request: Request) -> Response:
        return JSONResponse(resource_metadata(request))

    app.router.add_route(METADATA_PATH, metadata, methods=["GET"], include_in_schema=False)
    app.state.mcp = endpoint
    return endpoint


__all__ = ["METADATA_PATH", "PATH", "McpEndpoint", "add_mcp_routes", "resource_metadata"]
