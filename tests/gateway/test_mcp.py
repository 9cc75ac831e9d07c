"""AgentOS's MCP server driven by the MCP SDK's client over real transports: `agentos mcp` spawned
over stdio, and `/mcp` on a really started gateway over streamable HTTP, both negotiating 2025-11-25
(initialize handshake) and 2026-07-28 (per-request envelope). The gateway and every service run as
`agentos up` runs them (tests/e2e's runtime: its own NATS, the session's Postgres, the offline
model), with API keys per person, so a goal submitted over MCP really runs.

Every tool is called, every result is validated against the tool's declared outputSchema, both
resources are read, and the refusals are the gateway's: 401 with the MCP auth challenge for a missing
or bad key, a tool error naming the role for a key whose role may not (an analyst halting, voting)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jsonschema
import pytest
from agentos_cli.supervisor import Runtime
from agentos_gateway import hash_key
from agentos_kernel import Bus
from agentos_kernel.testing import unique
from agentos_schemas import subjects as s
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextResourceContents

from tests.e2e.conftest import rbus, runtime
from tests.policy.conftest import ask

__all__ = ["rbus", "runtime"]

# The gateway roles of each person's key; the shipped policy's humans are alice and bob
# (approvers), oscar (operator), ana (analyst), carol (admin).
PEOPLE = {"alice": ["operator"], "bob": ["operator"], "oscar": ["operator"], "ana": ["analyst"], "ivan": ["integrator"]}
HANDSHAKE, MODERN = "legacy", "2026-07-28"
CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "mcp-tools.json"
TRANSPORTS = [("stdio", HANDSHAKE), ("http", MODERN), ("http", HANDSHAKE), ("stdio", MODERN)]
IDS = [f"{t}-{'2025-11-25' if m == HANDSHAKE else m}" for t, m in TRANSPORTS]


def key(name: str) -> str:
    return f"mcp-test-key-{name}"


@pytest.fixture(scope="module")
def runtime_env() -> dict[str, str]:
    keys = [{"name": n, "sha256": hash_key(key(n)), "roles": roles} for n, roles in PEOPLE.items()]
    return {"AGENTOS_GATEWAY_API_KEYS": json.dumps(keys)}


@pytest.fixture(scope="module")
async def gateway_url(runtime: Runtime) -> str:
    bus = await Bus.connect(runtime.settings, source="mcp-test")
    try:
        kv = await bus.js.key_value(s.HEALTH_BUCKET)
        for name in await kv.keys():
            if name.startswith("gateway."):
                return str(json.loads((await kv.get(name)).value or b"{}")["url"])
    finally:
        await bus.close()
    raise AssertionError("no gateway reports a url")


@asynccontextmanager
async def connect(transport: str, mode: str, url: str, who: str | None) -> AsyncIterator[Client]:
    """The SDK's client on ``transport`` as ``who`` (None: no key), negotiating ``mode``."""
    if transport == "stdio":
        env = {**os.environ, "AGENTOS_GATEWAY_KEY": key(who) if who else ""}
        args = ["-m", "agentos_cli", "mcp", "--gateway", url]
        async with Client(StdioServerParameters(command=sys.executable, args=args, env=env), mode=mode) as client:
            yield client
        return
    headers = {"Authorization": f"Bearer {key(who)}"} if who else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    """Call ``tool``; its structuredContent, validated against the outputSchema it declares."""
    result = await client.call_tool(tool, args)
    assert not result.is_error, f"{tool}: {result.content}"
    declared = {t.name: t for t in (await client.list_tools()).tools}[tool].output_schema
    assert declared is not None and result.structured_content is not None, tool
    jsonschema.Draft202012Validator(declared).validate(result.structured_content)
    return dict(result.structured_content)


def refused(result: CallToolResult) -> str:
    assert result.is_error and result.structured_content is None, result
    return " ".join(getattr(c, "text", "") for c in result.content)


async def read(client: Client, uri: str) -> dict[str, Any]:
    contents = (await client.read_resource(uri)).contents
    assert len(contents) == 1 and isinstance(contents[0], TextResourceContents), contents
    assert contents[0].mime_type == "application/json"
    doc: dict[str, Any] = json.loads(contents[0].text)
    return doc


@pytest.mark.parametrize(("transport", "mode"), TRANSPORTS[:2], ids=IDS[:2])
async def test_a_goal_submitted_over_mcp_runs_and_its_report_and_trail_come_back(
    gateway_url: str, transport: str, mode: str
) -> None:
    async with connect(transport, mode, gateway_url, "ivan") as client:
        assert client.protocol_version == ("2025-11-25" if mode == HANDSHAKE else MODERN)
        served = {t.name: t for t in (await client.list_tools()).tools}
        contract = json.loads(CONTRACT.read_text())["tools"]  # what `agentos contracts` generates
        assert list(served) == [t["name"] for t in contract] and len(contract) == 10
        for tool in contract:
            assert served[tool["name"]].input_schema == tool["inputSchema"], tool["name"]
            assert served[tool["name"]].output_schema == tool["outputSchema"], tool["name"]
        receipt = await call(client, "submit_goal", text="Summarise our refund policy", idempotency_key=unique("k"))
        goal_id = receipt["goal_id"]
        assert receipt["duplicate"] is False and receipt["status_url"] == f"/goals/{goal_id}"
        first = await call(client, "goal_status", goal_id=goal_id)
        assert first["goal_id"] == goal_id and first["text"] == "Summarise our refund policy"
        report = await call(client, "goal_report", goal_id=goal_id, wait_s=90)
        assert report["finished"] and report["status"] == "completed", report
        assert "Answered from the research library" in (report["result"] or ""), report
        assert report["steps"] == 1 and report["tasks_completed"] >= 1
        resource = await read(client, f"agentos://goals/{goal_id}/report")
        assert resource["status"] == "completed" and resource["result"] == report["result"]
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {"agentos://goals/{goal_id}/report", "agentos://goals/{goal_id}/audit-trail"}
        trace_refused = refused(await client.call_tool("goal_trace", {"goal_id": goal_id}))
        assert "forbidden (403)" in trace_refused and "analyst" in trace_refused  # the integrator reads no audit
    async with connect(transport, mode, gateway_url, "ana") as analyst:
        await audited_like_http(analyst, gateway_url, goal_id)


async def audited_like_http(analyst: Client, url: str, goal_id: str) -> None:
    """The analyst's view of a goal submitted over MCP: its trace, trail and audit rows, the
    submission recorded with the submitting key's principal, as the same route over HTTP shows it."""
    trace = await call(analyst, "goal_trace", goal_id=goal_id)
    types = [e["type"] for e in trace["events"]]
    assert trace["goal_id"] == goal_id and types[0].startswith("dev.agentos.goal.submitted"), types
    assert any(t.startswith("dev.agentos.goal.completed") for t in types), types
    assert trace["tasks"] and all(t["outcome"] for t in trace["tasks"])
    trail = await read(analyst, f"agentos://goals/{goal_id}/audit-trail")
    assert [e["id"] for e in trail["events"]] == [e["id"] for e in trace["events"]]
    page = await call(analyst, "audit_query", goal=goal_id, type="goal.submitted")
    assert page["count"] == 1 and page["rows"][0]["principal"] == "key:ivan", page
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key('ana')}"}) as http:
        over_http = (await http.get("/audit/query", params={"goal": goal_id, "type": "goal.submitted"})).json()
    assert over_http["rows"] == page["rows"]


@pytest.mark.parametrize(("transport", "mode"), TRANSPORTS[2:], ids=IDS[2:])
async def test_approvals_are_listed_and_decided_by_approvers_only(
    gateway_url: str, rbus: Bus, transport: str, mode: str
) -> None:
    goal = unique("g")
    decision = await ask(
        rbus, "default", "finance", "outside_action", "bank:payments", tool="transfer_funds", goal_id=goal,
        task_id="t", call_id=unique("c"), args={"amount": "100", "to": "ACME"},
    )  # fmt: skip
    assert decision.decision == "require_approval" and decision.risk == "high" and decision.approval_id
    aid = decision.approval_id
    async with connect(transport, mode, gateway_url, "ana") as analyst:
        pending = await call(analyst, "list_approvals", status="pending")
        mine = [a for a in pending["approvals"] if a["approval_id"] == aid]
        assert mine and mine[0]["needed"] == 2 and mine[0]["goal_id"] == goal and pending["count"] >= 1
        said = refused(await analyst.call_tool("decide_approval", {"approval_id": aid, "verdict": "approve"}))
        assert "forbidden (403)" in said and "approvals.vote needs one of the roles admin, operator" in said, said
    async with connect(transport, mode, gateway_url, "alice") as alice:
        vote = await call(alice, "decide_approval", approval_id=aid, verdict="approve")
        assert (vote["state"], vote["voted_by"], vote["approval"]["approved_by"]) == (
            "pending (1 of 2 approvals)",
            "alice",
            ["alice"],
        )
        again = refused(await alice.call_tool("decide_approval", {"approval_id": aid, "verdict": "approve"}))
        assert "duplicate_vote (409)" in again, again
    async with connect(transport, mode, gateway_url, "bob") as bob:
        no_reason = refused(await bob.call_tool("decide_approval", {"approval_id": aid, "verdict": "reject"}))
        assert "reason_required (422)" in no_reason
        vote = await call(bob, "decide_approval", approval_id=aid, verdict="reject", reason="not this vendor")
        assert vote["state"] == "rejected" and vote["approval"]["rejected_by"] == "bob"
        decided = await call(bob, "list_approvals", status="rejected")
        assert aid in [a["approval_id"] for a in decided["approvals"]]


@pytest.mark.parametrize(("transport", "mode"), [TRANSPORTS[0], TRANSPORTS[1]], ids=IDS[:2])
async def test_operators_halt_and_resume_and_the_audit_log_names_them(
    gateway_url: str, transport: str, mode: str
) -> None:
    agent = unique("agent")
    since = dt.datetime.now(dt.UTC).isoformat()  # the audit rows of this test's switches are after it
    async with connect(transport, mode, gateway_url, "ana") as analyst:
        said = refused(await analyst.call_tool("halt", {"scope": "agent", "target": agent}))
        assert "forbidden (403)" in said and "halts.write needs one of the roles admin, operator" in said, said
        assert agent not in [h["target"] for h in (await call(analyst, "list_halts"))["halts"]]
    async with connect(transport, mode, gateway_url, "oscar") as oscar:
        switch = await call(oscar, "halt", scope="agent", target=agent, reason="rotating its keys")
        assert (switch["key"], switch["by"], switch["reason"]) == (
            f"halt.agent.{agent}",
            "key:oscar",
            "rotating its keys",
        )
        on = await call(oscar, "list_halts")
        assert [h for h in on["halts"] if h["target"] == agent] == [switch]
        assert "needs the target" in refused(await oscar.call_tool("resume", {"scope": "agent"}))
        assert (await call(oscar, "resume", scope="agent", target=agent)) == {
            "key": f"halt.agent.{agent}",
            "was_on": True,
        }
        assert agent not in [h["target"] for h in (await call(oscar, "list_halts"))["halts"]]
    async with connect(transport, mode, gateway_url, "ana") as analyst:
        halts = await audit_rows(analyst, "control.halt_requested", since)
        assert [r["principal"] for r in halts] == ["key:oscar"], halts  # the only switch turned on since
        resumes = await audit_rows(analyst, "control.resume_requested", since)
        assert [r["principal"] for r in resumes] == ["key:oscar"]


async def audit_rows(analyst: Client, type_: str, since: str, tries: int = 40) -> list[dict[str, Any]]:
    """The audit rows of ``type_`` since ``since``, once the projection has them."""
    for _ in range(tries):
        page = await call(analyst, "audit_query", type=type_, since=since, limit=500)
        if page["rows"]:
            return list(page["rows"])
        await asyncio.sleep(0.25)
    raise AssertionError(f"no {type_} row since {since} in the audit log")


async def test_mcp_refuses_a_missing_or_bad_key_with_the_auth_challenge(gateway_url: str) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=15) as http:
        missing = await http.post("/mcp", json=init, headers=accept)
        bad = await http.post("/mcp", json=init, headers=accept | {"Authorization": "Bearer nope"})
        metadata = await http.get("/.well-known/oauth-protected-resource/mcp")
    where = f'resource_metadata="{gateway_url}/.well-known/oauth-protected-resource/mcp"'
    assert missing.status_code == 401 and missing.json()["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"] == f"Bearer {where}"
    assert bad.status_code == 401 and bad.json()["code"] == "invalid_api_key"
    challenge = bad.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description=') and challenge.endswith(where)
    assert metadata.status_code == 200
    assert metadata.json() == {
        "resource": f"{gateway_url}/mcp",
        "resource_name": "AgentOS",
        "bearer_methods_supported": ["header"],
        "resource_documentation": f"{gateway_url}/docs",
    }
    with pytest.raises(Exception) as failed:  # the SDK's client cannot even start a session
        async with connect("http", HANDSHAKE, gateway_url, None):
            pass
    assert [type(e) for e in leaves(failed.value)] == [MCPError], repr(failed.value)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


async def test_stdio_with_a_bad_key_answers_every_tool_with_the_gateways_refusal(gateway_url: str) -> None:
    env = {**os.environ, "AGENTOS_GATEWAY_KEY": "not-a-key"}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "agentos_cli", "mcp", "--gateway", gateway_url], env=env
    )
    async with Client(params, mode=HANDSHAKE) as client:
        said = refused(await client.call_tool("list_halts", {}))
        assert "invalid_api_key (401)" in said, said
        with pytest.raises(Exception, match="invalid_api_key"):
            await client.read_resource("agentos://goals/0190f0c4-0000-7000-8000-000000000000/report")


INSPECTOR = os.environ.get("AGENTOS_TEST_MCP_INSPECTOR") or shutil.which("mcp-inspector")


async def inspector(url: str, *method: str) -> dict[str, Any]:
    """The MCP Inspector's CLI (`mcp-inspector --cli`) spawning `agentos mcp` as oscar; its JSON answer."""
    assert INSPECTOR is not None
    env = ["-e", f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}", "-e", f"AGENTOS_GATEWAY_KEY={key('oscar')}"]
    target = [sys.executable, "-m", "agentos_cli", "mcp", "--gateway", url]
    proc = await asyncio.create_subprocess_exec(
        INSPECTOR, "--cli", *env, *target, *method, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    doc: dict[str, Any] = json.loads(out)
    return doc


@pytest.mark.skipif(
    INSPECTOR is None,
    reason="the MCP Inspector CLI is not installed: `npm install @modelcontextprotocol/inspector`, then put "
    "node_modules/.bin/mcp-inspector on PATH or name it in AGENTOS_TEST_MCP_INSPECTOR",
)
async def test_the_mcp_inspector_lists_and_calls_the_tools_over_stdio(gateway_url: str) -> None:
    listed = await inspector(gateway_url, "--method", "tools/list")
    contract = {t["name"]: t for t in json.loads(CONTRACT.read_text())["tools"]}
    served = {t["name"]: t["outputSchema"] for t in listed["tools"]}
    assert served == {name: tool["outputSchema"] for name, tool in contract.items()}
    halts = await inspector(gateway_url, "--method", "tools/call", "--tool-name", "list_halts")
    assert not halts.get("isError"), halts
    jsonschema.Draft202012Validator(contract["list_halts"]["outputSchema"]).validate(halts["structuredContent"])
    unknown = "0190f0c4-0000-7000-8000-000000000000"
    asked = ["--method", "tools/call", "--tool-name", "goal_status", "--tool-arg", f"goal_id={unknown}"]
    missing = await inspector(gateway_url, *asked)
    assert missing["isError"] and "unknown_goal (404)" in missing["content"][0]["text"], missing
    templates = await inspector(gateway_url, "--method", "resources/templates/list")
    assert {t["uriTemplate"] for t in templates["resourceTemplates"]} == {
        "agentos://goals/{goal_id}/report",
        "agentos://goals/{goal_id}/audit-trail",
    }
