"""Input edge cases at the gateway, with the real policy and audit services behind it: a NUL
character in any string input is a 400 naming where it is (never a raw Postgres error); every
``$ref`` of the OpenAPI document resolves; an unauthenticated caller is not told the configured
webhook sources."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from agentos_kernel import Bus
from agentos_kernel.service import ServiceContext
from agentos_schemas.rpc import POLICY_APPROVALS, ApprovalList, ApprovalListReply

from tests.gateway.conftest import Running, dead_letters, dlq_seq, key_for, stored
from tests.gateway.test_events import problem
from tests.gateway.test_webhooks import deliver, zendesk_ticket


def string_parameters(spec: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(method, path template, parameter, where) of every string parameter in the document."""
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                schema = param.get("schema", {})
                types = {schema.get("type"), *(s.get("type") for s in schema.get("anyOf", []))}
                if "string" in types and param["in"] in ("query", "path"):
                    found.append((method.upper(), path, param["name"], param["in"]))
    return found


def url_with_nul(path: str, name: str, where: str) -> str:
    """``path`` with its path parameters filled in, and ``name`` holding a NUL (percent-encoded)."""
    filled = re.sub(r"\{([^}]+)\}", lambda m: "a%00b" if (where, m.group(1)) == ("path", name) else "x", path)
    return filled + (f"?{name}=a%00b" if where == "query" else "")


async def test_a_nul_in_any_string_parameter_is_a_400_naming_it(
    start_gateway: Any, policy_service: ServiceContext, audit_service: ServiceContext
) -> None:
    gateway: Running = await start_gateway()
    async with gateway.client("admin") as http:
        spec = (await http.get("/openapi.json")).json()
        params = string_parameters(spec)
        assert len(params) >= 15 and {p[1] for p in params} >= {"/approvals", "/audit/query", "/budgets"}
        answers = {}
        for method, path, name, where in params:
            resp = await http.request(
                method, url_with_nul(path, name, where), content=b"{}", headers={"content-type": "application/json"}
            )
            answers[(method, path, name)] = (resp.status_code, resp.json().get("code"), resp.json().get("detail"))
    wrong = {k: v for k, v in answers.items() if v[:2] != (400, "nul_character") or repr(k[2]) not in v[2]}
    assert not wrong, wrong


async def test_a_nul_in_a_body_is_a_400_naming_the_field_and_nothing_is_published(
    start_gateway: Any, policy_service: ServiceContext, audit_service: ServiceContext
) -> None:
    gateway: Running = await start_gateway()
    t = gateway.tenant
    start = await dlq_seq(gateway.bus)
    async with gateway.client("admin") as http:
        goal = await http.post("/goals", json={"text": "Compare\u0000 vendors"})
        assert "'data.text'" in problem(goal, 400, "nul_character")["detail"]
        vote = await http.post("/approvals/ap-1/reject", json={"reason": "no\u0000"})
        assert "'reason'" in problem(vote, 400, "nul_character")["detail"]
        halt = await http.post("/halts", json={"scope": "agent", "target": "researcher", "reason": "x\u0000"})
        assert "'reason'" in problem(halt, 400, "nul_character")["detail"]
    async with gateway.client(role=None) as http:
        ticket = zendesk_ticket("8001")
        ticket["detail"]["subject"] = "broken\u0000"
        hook = await deliver(http, "zendesk", ticket)
        assert "'data.subject'" in problem(hook, 400, "nul_character")["detail"]
    assert await stored(gateway.bus, f"agentos.{t}.>", timeout=0.5) == []
    letters = await dead_letters(gateway.bus, start, wait_for=2)
    assert [m.headers["AgentOS-DLQ-Code"] for m in letters] == ["nul_character", "nul_character"]


async def test_a_service_refuses_a_nul_in_a_request_with_the_field(bus: Bus, policy_service: ServiceContext) -> None:
    """What the CLI asks the services directly gets the same clear refusal, not a Postgres error."""
    answer = await bus.request(POLICY_APPROVALS, ApprovalList(tenant="a\x00b"), ApprovalListReply)
    assert answer.error is not None and "tenant contains a NUL character" in answer.error


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} is not a reference into the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (no {part!r})"
        node = node[part]
    return node


async def test_every_ref_in_the_openapi_document_resolves(gateway: Running) -> None:
    async with gateway.client("admin") as http:
        spec = (await http.get("/openapi.json")).json()
    found = refs(spec)
    assert any(r.endswith("/Limits") for r in found)  # POST /goals refers to its Limits
    for ref in found:
        resolve(spec, ref)
    body = spec["paths"]["/goals"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$defs" not in json.dumps(body)


async def test_an_unknown_webhook_source_is_not_told_the_configured_ones(gateway: Running) -> None:
    async with gateway.client(role=None) as http:
        unknown = problem(await deliver(http, "nosuch", zendesk_ticket()), 422, "unknown_source")
        handshake = await http.options("/webhooks/nosuch", headers={"WebHook-Request-Origin": "x.example"})
        shake = problem(handshake, 422, "unknown_source")
        unmapped = problem(await deliver(http, "nomap", zendesk_ticket()), 422, "unknown_mapping")
    for doc in (unknown, shake, unmapped):
        assert not re.search(r"zendesk|square|'ce'|nomap|known:", doc["detail"]), doc["detail"]
    async with httpx.AsyncClient(
        base_url=gateway.url, headers={"Authorization": f"Bearer {key_for('integrator', gateway.tenant)}"}
    ) as http:
        listed = await http.post("/mappings/nosuch/preview", json={})
        assert "zendesk" in problem(listed, 422, "unknown_mapping")["detail"]  # an API-key caller is told
