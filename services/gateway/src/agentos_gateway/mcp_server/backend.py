"""How an MCP tool reaches AgentOS: through the gateway's own HTTP routes, as the caller.

Every tool is a request to the route that does the same thing for HTTP and the CLI
(``POST /goals``, ``GET /approvals``, ``POST /halts`` …), sent with the caller's API key, so the
route's role check, tenant binding, idempotency, policy request and the principal it records
(``key:<name>``) are the very ones an HTTP caller meets. There is no second implementation of any
operation here, only two ways to reach the routes:

- :class:`RemoteGateway` (``agentos mcp``, stdio): one :class:`~agentos_gateway.client.GatewayClient`
  to a running gateway's URL with the configured key.
- :class:`InProcessGateway` (``/mcp`` on the gateway): each call goes into the gateway's own ASGI app
  in-process (no socket), with the key the MCP request was authenticated with and its client address.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import httpx
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.types import ASGIApp

from agentos_gateway.client import GatewayClient, GatewayError, GatewayUnavailable

CALLER = "agentos.mcp.caller"
"""Where the ``/mcp`` endpoint leaves the authenticated caller in the ASGI scope: (key, client host)."""
INTERNAL_BASE = "http://gateway.internal"


class Backend(Protocol):
    """Gives a tool call the gateway client to make its request with."""

    def client(self, ctx: Context[Any, Any]) -> contextlib.AbstractAsyncContextManager[GatewayClient]: ...


def path(template: str, *parts: str, **query: Any) -> str:
    """A route path with its path parameters quoted and the query's set values appended."""
    built = template.format(*(quote(p, safe="") for p in parts))
    params = {k: v for k, v in query.items() if v is not None}
    return f"{built}?{urlencode(params)}" if params else built


async def call(
    backend: Backend, ctx: Context[Any, Any], method: str, route: str, body: dict[str, Any] | None = None, **kw: Any
) -> Any:
    """The route's JSON answer; a refusal (its problem document) becomes the tool's error."""
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"} if body is not None else None
    async with backend.client(ctx) as client:
        try:
            resp = await client.request(method, route, payload, headers, **kw)
        except GatewayUnavailable as exc:
            raise ToolError(f"the gateway cannot be reached: {exc.problem.get('detail', exc)}") from None
        except GatewayError as exc:
            raise ToolError(refusal(exc)) from None
    return resp.json()


def refusal(exc: GatewayError) -> str:
    """A gateway problem as one line: ``forbidden (403): halts.write needs one of the roles …``."""
    problem = exc.problem
    text = f"{problem.get('code', 'error')} ({exc.status}): {problem.get('detail', '')}"
    errors = problem.get("errors") or []
    if errors:
        text += " [" + "; ".join(f"{e.get('field', '')}: {e.get('detail', '')}" for e in errors[:5]) + "]"
    return text


class RemoteGateway:
    """A running gateway at ``url``, called with one API key (``agentos mcp``)."""

    def __init__(self, url: str, api_key: str | None, *, timeout_s: float = 30.0) -> None:
        self.url = url
        self._client = GatewayClient(url, api_key, retries=2, timeout_s=timeout_s)

    @contextlib.asynccontextmanager
    async def client(self, ctx: Context[Any, Any]) -> AsyncIterator[GatewayClient]:
        yield self._client

    async def aclose(self) -> None:
        await self._client.aclose()


class InProcessGateway:
    """The gateway's own app, called in-process as the client the ``/mcp`` request came from."""

    def __init__(self, app: ASGIApp, *, timeout_s: float = 30.0) -> None:
        self.app = app
        self.timeout_s = timeout_s

    @contextlib.asynccontextmanager
    async def client(self, ctx: Context[Any, Any]) -> AsyncIterator[GatewayClient]:
        request = ctx.request_context.request
        if not isinstance(request, Request) or CALLER not in request.scope:
            raise ToolError("this MCP request carries no authenticated caller")
        key, host = request.scope[CALLER]
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False, client=(host or "", 0))
        client = GatewayClient(INTERNAL_BASE, key, retries=0, timeout_s=self.timeout_s, transport=transport)
        try:
            yield client
        finally:
            await client.aclose()


__all__ = ["CALLER", "Backend", "InProcessGateway", "RemoteGateway", "call", "path", "refusal"]
