"""`/mcp` on a gateway with no API keys: loopback callers are let in (as admin), as on every route,
and a web page cannot reach it through a rebound DNS name (Host and Origin must be loopback ones).
The session manager starts on the first `/mcp` request and stops with the gateway's HTTP server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import httpx2
import jsonschema
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.gateway.conftest import Running

Start = Callable[..., Awaitable[Running]]
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
ACCEPT = {"Accept": "application/json, text/event-stream"}


async def test_without_keys_loopback_callers_use_mcp_and_rebound_origins_are_refused(start_gateway: Start) -> None:
    gw = await start_gateway(api_keys=[])
    assert gw.gw.keys.anonymous and not gw.server.mcp.started  # nothing started before the first request
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        Client(streamable_http_client(f"{gw.url}/mcp", http_client=http)) as client,
    ):
        assert client.protocol_version in ("2025-11-25", "2026-07-28")
        tool = {t.name: t for t in (await client.list_tools()).tools}["list_halts"]
        result = await client.call_tool("list_halts", {})
        assert not result.is_error, result.content
        assert tool.output_schema is not None
        jsonschema.Draft202012Validator(tool.output_schema).validate(result.structured_content)
    async with httpx.AsyncClient(base_url=gw.url, timeout=15) as raw:
        rebound = await raw.post("/mcp", json=INIT, headers=ACCEPT | {"Origin": "http://evil.example"})
        renamed = await raw.post("/mcp", json=INIT, headers=ACCEPT | {"Host": "evil.example"})
        same = await raw.post("/mcp", json=INIT, headers=ACCEPT | {"Origin": gw.url})
    assert rebound.status_code == 403 and renamed.status_code == 421, (rebound.text, renamed.text)
    assert same.status_code == 200, same.text
    endpoint = gw.server.mcp
    assert endpoint is not None and endpoint.started
    await gw.server.stop()
    assert not endpoint.started
