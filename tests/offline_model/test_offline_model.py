"""The offline model, exercised through litellm's real HTTP path (``openai/`` provider)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import httpx
import jsonschema
import litellm
import pytest
from agentos_offline_model import (
    REFUSAL_TEXT,
    OfflineModelServer,
    RequestFacts,
    Scenario,
    default_text,
    generate_from_schema,
)
from litellm.exceptions import InternalServerError, RateLimitError, Timeout
from pydantic import BaseModel, ValidationError

litellm.suppress_debug_info = True
# litellm builds pydantic models from TypedDicts with ReadOnly items; harmless, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning")

SCENARIO_YAML = """
timeout_s: 5
rules:
  - name: draft-first
    match: {user_contains: "review draft"}
    times: 1
    respond: {content: "rejected #{n} for {model}"}
  - name: draft-later
    match: {user_contains: "review draft"}
    respond: {content: "approved #{n}"}
  - name: search-done
    match: {user_contains: "search the web", has_tool_result: true}
    respond: {content: "summary of the search results"}
  - name: search
    match: {user_contains: "search the web"}
    respond:
      tool_calls: [{name: web_search, arguments: {query: "{user}", limit: 3}}]
  - name: qa-verdict
    match: {agent: qa, model: "offline-*"}
    respond: {json: {verdict: rejected, feedback: "{agent} wants sources", round: "{n}"}}
  - name: smart-only
    match: {model: offline-smart}
    respond: {content: "smart model says hi"}
  - name: ticket
    match: {user_regex: "TICKET-[0-9]+"}
    respond: {content: "ticket noted"}
  - {name: boom, match: {user_contains: FAULT-500}, respond: {fault: server_error}}
  - {name: slow-down, match: {user_contains: FAULT-429}, respond: {fault: rate_limit}}
  - {name: hang, match: {user_contains: FAULT-TIMEOUT}, latency_ms: 2500, respond: {fault: timeout}}
  - {name: garbled, match: {user_contains: FAULT-JSON}, respond: {fault: invalid_json}}
  - {name: no-way, match: {user_contains: FAULT-REFUSE}, respond: {fault: refusal}}
"""

WEB_SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": "Search the web.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
            "required": ["query"],
        },
    },
}

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "Step": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "minLength": 3, "maxLength": 40},
                "owner": {"anyOf": [{"type": "null"}, {"type": "string", "format": "email"}]},
                "priority": {"enum": ["high", "low"]},
                "effort": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
            },
            "required": ["title", "owner", "priority", "effort"],
            "additionalProperties": False,
        }
    },
    "properties": {
        "summary": {"type": "string"},
        "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}, "minItems": 2, "maxItems": 3},
        "budget": {"type": ["integer", "null"], "minimum": 100},
        "approved": {"type": "boolean"},
        "kind": {"const": "plan"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 2},
        "meta": {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
    },
    "required": ["summary", "steps", "budget", "approved", "kind", "tags", "meta"],
    "additionalProperties": False,
}


class Verdict(BaseModel):
    verdict: str
    score: int
    reasons: list[str]


@pytest.fixture(scope="module")
def server() -> Iterator[OfflineModelServer]:
    with OfflineModelServer(Scenario.from_yaml(SCENARIO_YAML)) as running:
        yield running


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def ask(server: OfflineModelServer, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    kwargs.setdefault("model", "openai/offline-fast")
    return await litellm.acompletion(api_base=server.url, api_key="offline", messages=messages, num_retries=0, **kwargs)


def test_server_binds_loopback_on_a_free_port(server: OfflineModelServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}/v1"
    assert server.port > 0 and server.running


async def test_plain_text_is_deterministic_with_usage(server: OfflineModelServer) -> None:
    messages = [{"role": "system", "content": "You are terse."}, *user("What is NATS JetStream?")]
    first, second = await ask(server, messages), await ask(server, messages)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content == default_text("What is NATS JetStream?")
    assert first.choices[0].finish_reason == "stop"
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (
        second.usage.prompt_tokens,
        second.usage.completion_tokens,
    )


async def test_times_limits_a_rule_to_its_first_matches(server: OfflineModelServer) -> None:
    server.scenario.reset()
    first = await ask(server, user("please review draft 1"))
    second = await ask(server, user("please review draft 1"))
    assert first.choices[0].message.content == "rejected #1 for offline-fast"
    assert second.choices[0].message.content == "approved #1"
    assert server.scenario.counts["draft-first"] == 1
    server.scenario.reset()
    again = await ask(server, user("please review draft 1"))
    assert again.choices[0].message.content == "rejected #1 for offline-fast"


async def test_tool_calls_are_parsed_by_litellm(server: OfflineModelServer) -> None:
    messages = user("search the web for competitor pricing")
    resp = await ask(server, messages, tools=[WEB_SEARCH_TOOL])
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "web_search" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert arguments == {"query": "search the web for competitor pricing", "limit": 3}
    follow_up = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "three results"},
    ]
    final = await ask(server, follow_up, tools=[WEB_SEARCH_TOOL])
    assert final.choices[0].message.content == "summary of the search results"
    assert not final.choices[0].message.tool_calls


async def test_tools_offered_without_rule_answer_in_text(server: OfflineModelServer) -> None:
    resp = await ask(server, user("what time is it"), tools=[WEB_SEARCH_TOOL])
    assert resp.choices[0].message.content == default_text("what time is it")
    assert not resp.choices[0].message.tool_calls


async def test_forced_tool_choice_calls_that_tool(server: OfflineModelServer) -> None:
    choice = {"type": "function", "function": {"name": "web_search"}}
    resp = await ask(server, user("anything"), tools=[WEB_SEARCH_TOOL], tool_choice=choice)
    arguments = json.loads(resp.choices[0].message.tool_calls[0].function.arguments)
    jsonschema.validate(arguments, WEB_SEARCH_TOOL["function"]["parameters"])


async def test_agent_rule_answers_templated_json(server: OfflineModelServer) -> None:
    messages = [{"role": "system", "content": "You review work.\nagent: qa\n"}, *user("Competitor A report")]
    resp = await ask(server, messages)
    body = json.loads(resp.choices[0].message.content)
    assert body["verdict"] == "rejected" and body["feedback"] == "qa wants sources"
    assert body["round"].isdigit()


async def test_model_glob_and_regex_rules(server: OfflineModelServer) -> None:
    smart = await ask(server, user("hello"), model="openai/offline-smart")
    assert smart.choices[0].message.content == "smart model says hi"
    ticket = await ask(server, user("see TICKET-42"))
    assert ticket.choices[0].message.content == "ticket noted"


async def test_json_schema_default_validates(server: OfflineModelServer) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "Plan", "schema": PLAN_SCHEMA}}
    resp = await ask(server, user("Plan the Q3 launch"), response_format=response_format)
    value = json.loads(resp.choices[0].message.content)
    jsonschema.validate(value, PLAN_SCHEMA)
    assert "Plan the Q3 launch" in value["summary"]


async def test_pydantic_response_format_round_trips(server: OfflineModelServer) -> None:
    resp = await ask(server, user("judge this"), response_format=Verdict)
    verdict = Verdict.model_validate_json(resp.choices[0].message.content)
    assert verdict.score == 1 and len(verdict.reasons) == 1


async def test_json_object_default(server: OfflineModelServer) -> None:
    resp = await ask(server, user("give json"), response_format={"type": "json_object"})
    assert json.loads(resp.choices[0].message.content) == {"answer": default_text("give json")}


async def test_server_error_fault(server: OfflineModelServer) -> None:
    with pytest.raises(InternalServerError):
        await ask(server, user("FAULT-500"))


async def test_rate_limit_fault(server: OfflineModelServer) -> None:
    with pytest.raises(RateLimitError):
        await ask(server, user("FAULT-429"))


async def test_timeout_fault_trips_client_timeout(server: OfflineModelServer) -> None:
    started = time.monotonic()
    with pytest.raises(Timeout):
        await ask(server, user("FAULT-TIMEOUT"), timeout=1)
    assert time.monotonic() - started < 2.4


async def test_invalid_json_fault(server: OfflineModelServer) -> None:
    resp = await ask(server, user("FAULT-JSON"), response_format={"type": "json_object"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.choices[0].message.content)


async def test_refusal_fault(server: OfflineModelServer) -> None:
    resp = await ask(server, user("FAULT-REFUSE"))
    assert resp.choices[0].message.content == REFUSAL_TEXT
    async with httpx.AsyncClient() as client:
        raw = await client.post(
            f"{server.url}/chat/completions", json={"model": "offline-fast", "messages": user("FAULT-REFUSE")}
        )
    assert raw.json()["choices"][0]["message"]["refusal"] == REFUSAL_TEXT


async def test_max_tokens_truncates_default_text(server: OfflineModelServer) -> None:
    resp = await ask(server, user("a fairly long question about agents"), max_tokens=2)
    assert resp.choices[0].message.content == default_text("a fairly long question about agents")[:8]
    assert resp.choices[0].finish_reason == "length"


async def test_streaming_through_litellm(server: OfflineModelServer) -> None:
    stream = await ask(server, user("stream a fairly long answer please"), stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == default_text("stream a fairly long answer please")


async def test_raw_stream_ends_with_done_and_usage(server: OfflineModelServer) -> None:
    body = {
        "model": "offline-fast",
        "messages": user("search the web now"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient() as client:
        resp = await client.post(f"{server.url}/chat/completions", json=body)
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert resp.headers["content-type"].startswith("text/event-stream") and events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"model": "offline-fast"}', "messages"),
        (b'{"model": "offline-fast", "messages": []}', "messages"),
        (b'["a list"]', "JSON object"),
        (b'{"model": "offline-fast", "messages": [{"role": "wizard", "content": "x"}]}', "role"),
    ],
)
async def test_bad_requests_get_openai_style_400(server: OfflineModelServer, content: bytes, needle: str) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.post(
            f"{server.url}/chat/completions", content=content, headers={"content-type": "application/json"}
        )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and needle in error["message"]


async def test_models_and_healthz(server: OfflineModelServer) -> None:
    async with httpx.AsyncClient() as client:
        models = (await client.get(f"{server.url}/models")).json()
        health = await client.get(f"{server.base_url}/healthz")
    assert {"offline-fast", "offline-smart"} <= {model["id"] for model in models["data"]}
    assert health.json() == {"status": "ok"}


def test_generate_from_schema_is_deterministic_and_valid() -> None:
    node = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "child": {"oneOf": [{"$ref": "#/definitions/Node"}, {"type": "null"}]},
            "count": {"type": "integer", "minimum": 5, "multipleOf": 3},
        },
        "required": ["name"],
    }
    schema = {"type": "object", "properties": {"node": {"$ref": "#/definitions/Node"}}, "definitions": {"Node": node}}
    value = generate_from_schema(schema, "seed text")
    assert value == generate_from_schema(schema, "seed text")
    jsonschema.validate(value, schema)
    assert value["node"]["count"] == 6


def test_request_facts_read_agent_parts_and_tool_results() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": "Role text\nagent: researcher"}]},
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
    ]
    facts = RequestFacts.from_request("offline-fast", messages)
    assert (facts.agent, facts.user, facts.has_tool_result) == ("researcher", "second", True)


def test_scenario_validation_and_loading(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unique"):
        Scenario.model_validate(
            {"rules": [{"name": "a", "respond": {"content": "x"}}, {"name": "a", "respond": {"content": "y"}}]}
        )
    with pytest.raises(ValidationError, match="exactly one"):
        Scenario.model_validate({"rules": [{"name": "a", "respond": {"content": "x", "fault": "timeout"}}]})
    with pytest.raises(ValidationError):
        Scenario.model_validate({"rules": [{"name": "a", "respond": {"fault": "meltdown"}}]})
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO_YAML, encoding="utf-8")
    loaded = Scenario.load(path)
    assert loaded.rules[0].name == "draft-first" and loaded.timeout_s == 5
    assert Scenario.from_yaml("").rules == []


def test_cli_prints_url_and_serves(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text("rules:\n  - {name: hi, respond: {content: from the cli}}\n", encoding="utf-8")
    command = [sys.executable, "-m", "agentos_offline_model", "--port", "0", "--scenario", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        body = {"model": "offline-fast", "messages": user("hi")}
        answer = httpx.post(f"{url}/chat/completions", json=body, timeout=5).json()
        assert answer["choices"][0]["message"]["content"] == "from the cli"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


async def test_openai_models_skip_the_openai_sdk(server: OfflineModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """``agentos_kernel.llm`` sends ``openai/`` calls through litellm's own HTTP handler (less CPU
    per call); a litellm upgrade that drops the switch fails here instead of silently costing more."""
    from agentos_kernel.llm import LLM, ModelRegistry, ModelSpec

    def sdk(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the OpenAI SDK path was used")

    monkeypatch.setattr(litellm.main.openai_chat_completions, "completion", sdk)
    llm = LLM(
        ModelRegistry(
            models=(
                ModelSpec(
                    alias="fast",
                    model="openai/offline-fast",
                    api_base=server.url,
                    input_cost_per_token=1e-6,
                    output_cost_per_token=2e-6,
                ),
            )
        )
    )
    assert os.environ["EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"] == "True"
    response, calls = await llm.complete(["fast"], user("What is NATS JetStream?"))
    assert response.choices[0].message.content == default_text("What is NATS JetStream?")
    [call] = calls
    assert call.ok and call.input_tokens == response.usage.prompt_tokens > 0
    assert call.cost_usd == pytest.approx(call.input_tokens * 1e-6 + call.output_tokens * 2e-6)


async def test_openai_organization_and_project_headers_are_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm's own handler does not send the SDK's organization and project headers; the kernel
    adds them to ``openai/`` calls from the same environment variables the SDK reads."""
    from agentos_kernel.llm import LLM, ModelRegistry, ModelSpec

    seen: list[dict[str, str]] = []
    answer = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    ).encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head[1:] if ln)}
        await reader.readexactly(int(headers.get("content-length", "0")))
        seen.append(headers)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(answer)).encode()
            + b"\r\n\r\n"
            + answer
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("OPENAI_ORG_ID", "org-acme")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-ingest")
    try:
        llm = LLM(
            ModelRegistry(models=(ModelSpec(alias="fast", model="openai/m", api_base=f"http://127.0.0.1:{port}/v1"),))
        )
        response, _ = await llm.complete(["fast"], user("hi"))
    finally:
        server.close()
    assert response.choices[0].message.content == "ok"
    assert seen[0]["openai-organization"] == "org-acme" and seen[0]["openai-project"] == "proj-ingest"


def test_tool_result_template_fills_the_newest_tool_result() -> None:
    from agentos_offline_model.scenario import render, template_variables

    messages = [
        *user("what time is it?"),
        {"role": "tool", "tool_call_id": "c1", "content": "old"},
        {"role": "tool", "tool_call_id": "c2", "content": '{"datetime": "2026-01-01T10:00"}'},
    ]
    facts = RequestFacts.from_request("offline-fast", messages)
    assert facts.tool_result == '{"datetime": "2026-01-01T10:00"}'
    filled = render({"answer": "said: {tool_result}"}, template_variables(facts, 1))
    assert filled == {"answer": 'said: {"datetime": "2026-01-01T10:00"}'}
    assert RequestFacts.from_request("offline-fast", user("hi")).tool_result == ""
