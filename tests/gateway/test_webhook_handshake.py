"""The CloudEvents webhook abuse-protection handshake (HTTP Web Hooks spec §4): OPTIONS with
WebHook-Request-Origin on /webhooks/{source} and /events, allowed by configured origins only."""

from __future__ import annotations

from typing import Any

import httpx
from agentos_gateway import build_app, hash_key

from tests.gateway.conftest import SECRET, Running, dead_letters, dlq_seq, key_for
from tests.gateway.test_events import problem

ORIGIN = "tickets.example.com"


def configured(tenant: str) -> dict[str, Any]:
    """Sources and keys with allowed origins (the rest of the test settings as usual)."""
    keys: list[dict[str, Any]] = [
        {"name": f"{role}-key", "sha256": hash_key(key_for(role, tenant)), "roles": [role], "tenant": tenant}
        for role in ("operator", "analyst", "admin")
    ]
    keys.append(
        {
            "name": "integrator-key",
            "sha256": hash_key(key_for("integrator", tenant)),
            "roles": ["integrator"],
            "tenant": tenant,
            "rate_per_s": 5,
            "origins": [ORIGIN],
        }
    )
    return {
        "api_keys": keys,
        "webhooks": {
            "zendesk": {"secrets": [SECRET], "tenant": tenant, "origins": [ORIGIN, "other.example.com"]},
            "square": {"secrets": [SECRET], "tenant": tenant},
            "anyone": {"secrets": [SECRET], "tenant": tenant, "origins": ["*"]},
        },
    }


def handshake(origin: str | None = ORIGIN, rate: str | None = None, **extra: str) -> dict[str, str]:
    headers = dict(extra)
    if origin is not None:
        headers["WebHook-Request-Origin"] = origin
    if rate is not None:
        headers["WebHook-Request-Rate"] = rate
    return headers


def allowed(resp: httpx.Response, origin: str, rate: str) -> None:
    assert resp.status_code == 200, resp.text
    assert resp.headers["webhook-allowed-origin"] == origin
    assert resp.headers["webhook-allowed-rate"] == rate
    assert "POST" in resp.headers["allow"]


def refused(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    doc = problem(resp, status, code)
    assert "webhook-allowed-origin" not in resp.headers and "webhook-allowed-rate" not in resp.headers
    return doc


async def test_a_source_allows_only_its_configured_origins(start_gateway: Any, tenant: str) -> None:
    gateway: Running = await start_gateway(**configured(tenant))
    start = await dlq_seq(gateway.bus)
    async with gateway.client(role=None) as http:
        callback = {"WebHook-Request-Callback": "https://tickets.example.com/confirm?id=1&key=x"}
        asked = handshake(rate="120", **callback)
        allowed(await http.options("/webhooks/zendesk", headers=asked), ORIGIN, "*")
        allowed(
            await http.options("/webhooks/Zendesk", headers=handshake("Other.Example.COM")), "Other.Example.COM", "*"
        )
        allowed(
            await http.options("/webhooks/anyone", headers=handshake("whoever.example.org")), "whoever.example.org", "*"
        )
        doc = refused(
            await http.options("/webhooks/zendesk", headers=handshake("evil.example.net")), 403, "origin_not_allowed"
        )
        assert "'evil.example.net'" in doc["detail"] and "webhooks.zendesk.origins" in doc["detail"]
        doc = refused(await http.options("/webhooks/square", headers=handshake()), 403, "origin_not_allowed")
        assert "webhooks.square.origins" in doc["detail"] and "(empty)" in doc["detail"]
        refused(await http.options("/webhooks/nosuch", headers=handshake()), 422, "unknown_source")
        doc = refused(await http.options("/webhooks/zendesk", headers=handshake(rate="fast")), 400, "bad_request_rate")
        assert "requests per minute" in doc["detail"]
        refused(await http.options("/webhooks/zendesk", headers=handshake(rate="0")), 400, "bad_request_rate")
        plain = await http.options("/webhooks/zendesk")
        assert plain.status_code == 204 and "POST" in plain.headers["allow"]
        assert "webhook-allowed-origin" not in plain.headers
    # refusals are answers to a question, not rejected payloads: nothing is dead-lettered
    assert await dead_letters(gateway.bus, start, timeout=0.3) == []


async def test_events_allows_the_origins_of_the_api_key_presented(start_gateway: Any, tenant: str) -> None:
    gateway: Running = await start_gateway(**configured(tenant))
    async with gateway.client() as http:
        allowed(await http.options("/events", headers=handshake()), ORIGIN, "300")  # 5/s = 300/min
        allowed(await http.options("/events", headers=handshake(rate="120")), ORIGIN, "120")
        allowed(await http.options("/events", headers=handshake(rate="100000")), ORIGIN, "300")
        doc = refused(await http.options("/events", headers=handshake("evil.example.net")), 403, "origin_not_allowed")
        assert "integrator-key" in doc["detail"]
    async with gateway.client("operator") as http:  # may not write events at all
        refused(await http.options("/events", headers=handshake()), 403, "forbidden")
    async with gateway.client(role=None) as http:
        refused(await http.options("/events", headers=handshake()), 401, "missing_api_key")
    async with gateway.client(role=None, headers={"X-API-Key": "wrong"}) as http:
        refused(await http.options("/events", headers=handshake()), 401, "invalid_api_key")


async def test_the_fastapi_routes_answer_the_same_and_are_documented(start_gateway: Any, tenant: str) -> None:
    """The routes behind the fast path (what /docs shows) give the same answers."""
    gateway: Running = await start_gateway(**configured(tenant))
    app = build_app(gateway.gw)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
    headers = {"Authorization": f"Bearer {key_for('integrator', tenant)}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=headers) as http:
        allowed(await http.options("/webhooks/zendesk", headers=handshake(rate="10")), ORIGIN, "*")
        refused(
            await http.options("/webhooks/zendesk", headers=handshake("evil.example.net")), 403, "origin_not_allowed"
        )
        allowed(await http.options("/events", headers=handshake(rate="60")), ORIGIN, "60")
        assert (await http.options("/events")).status_code == 204
    paths = app.openapi()["paths"]
    assert "options" in paths["/webhooks/{source}"] and "options" in paths["/events"]
    assert "post" in paths["/webhooks/{source}"] and "post" in paths["/events"]
