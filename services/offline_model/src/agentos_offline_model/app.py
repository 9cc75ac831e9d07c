"""The OpenAI-compatible HTTP API of the offline model, as a FastAPI (ASGI) application.

Routes: ``POST /v1/chat/completions`` (plain and ``stream: true``), ``GET /v1/models`` and
``GET /healthz``. :func:`plan_answer` decides what to answer; the routes only speak HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentos_offline_model.generate import (
    REFUSAL_TEXT,
    count_tokens,
    default_text,
    generate_from_schema,
    invalid_json_text,
    json_object_answer,
)
from agentos_offline_model.scenario import (
    RequestFacts,
    RuleHit,
    Scenario,
    message_text,
    render,
    template_variables,
)

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_STREAM_PIECE = 24


class ChatRequest(BaseModel):
    """The subset of an OpenAI chat-completions request the offline model reads."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None

    @field_validator("messages")
    @classmethod
    def _roles_known(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, message in enumerate(messages):
            if message.get("role") not in _ROLES:
                raise ValueError(f"messages[{index}].role must be one of {sorted(_ROLES)}")
        return messages


@dataclass
class Answer:
    """What the model answers: text and/or tool calls, or a fault, after ``delay_s`` seconds."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    refusal: str | None = None
    fault: str | None = None
    delay_s: float = 0.0
    rule: str | None = None
    finish: str | None = None

    @property
    def finish_reason(self) -> str:
        """``tool_calls`` when tools are called, else ``stop`` (or an explicit override)."""
        return self.finish or ("tool_calls" if self.tool_calls else "stop")


def plan_answer(scenario: Scenario, request: ChatRequest) -> Answer:
    """Decide the answer to ``request``: the first matching rule's, or the deterministic default."""
    facts = RequestFacts.from_request(request.model, request.messages)
    hit = scenario.match(facts)
    if hit is None:
        return _default_answer(request, facts)
    return _rule_answer(scenario, hit, request, facts)


def _rule_answer(scenario: Scenario, hit: RuleHit, request: ChatRequest, facts: RequestFacts) -> Answer:
    rule, respond = hit.rule, hit.rule.respond
    variables = template_variables(facts, hit.n) if respond.template else {}
    delay = (rule.latency_ms or 0) / 1000
    if respond.fault is not None:
        return _fault_answer(respond.fault, scenario, hit, request, facts)
    if respond.tool_calls is not None:
        calls = [
            _tool_call(spec.name, render(spec.arguments, variables), f"{rule.name}|{hit.n}|{index}")
            for index, spec in enumerate(respond.tool_calls)
        ]
        return Answer(tool_calls=calls, delay_s=delay, rule=rule.name)
    if respond.json_value is not None:
        content = json.dumps(render(respond.json_value, variables), ensure_ascii=False)
    else:
        content = render(respond.content, variables)
    return Answer(content=content, delay_s=delay, rule=rule.name)


def _fault_answer(fault: str, scenario: Scenario, hit: RuleHit, request: ChatRequest, facts: RequestFacts) -> Answer:
    latency = hit.rule.latency_ms
    delay = (latency or 0) / 1000
    if fault == "timeout":
        answer = _default_answer(request, facts)
        answer.delay_s = scenario.timeout_s if latency is None else delay
    elif fault == "invalid_json":
        answer = Answer(content=invalid_json_text(facts.user), delay_s=delay)
    elif fault == "refusal":
        answer = Answer(content=REFUSAL_TEXT, refusal=REFUSAL_TEXT, delay_s=delay)
    else:
        answer = Answer(fault=fault, delay_s=delay)
    answer.rule = hit.rule.name
    return answer


def _default_answer(request: ChatRequest, facts: RequestFacts) -> Answer:
    response_format = request.response_format or {}
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return Answer(content=json.dumps(generate_from_schema(schema, facts.user), ensure_ascii=False))
    if kind == "json_object":
        return Answer(content=json.dumps(json_object_answer(facts.user), ensure_ascii=False))
    forced = _forced_tool(request)
    if forced is not None:
        arguments = generate_from_schema(forced.get("parameters") or {"type": "object"}, facts.user)
        return Answer(tool_calls=[_tool_call(forced["name"], arguments, f"default|{facts.user}")])
    text = default_text(facts.user)
    limit = request.max_tokens
    if limit is not None and count_tokens(text) > limit:
        return Answer(content=text[: limit * 4], finish="length")
    return Answer(content=text)


def _forced_tool(request: ChatRequest) -> dict[str, Any] | None:
    """The function a ``tool_choice`` forces (a named function, or the first one for ``required``)."""
    functions = [tool.get("function") or {} for tool in request.tools or []]
    functions = [function for function in functions if function.get("name")]
    choice = request.tool_choice
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((function for function in functions if function["name"] == wanted), None)
    if choice == "required" and functions:
        return functions[0]
    return None


def _tool_call(name: str, arguments: Any, key: str) -> dict[str, Any]:
    digest = hashlib.sha256(f"{name}|{key}".encode()).hexdigest()[:24]
    return {
        "id": f"call_{digest}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def usage(request: ChatRequest, answer: Answer) -> dict[str, int]:
    """Deterministic token usage: ceil(characters / 4) over the prompt and over the answer."""
    prompt_parts = [message_text(message.get("content")) for message in request.messages]
    for message in request.messages:
        for call in message.get("tool_calls") or []:
            prompt_parts.append(json.dumps(call.get("function") or {}, sort_keys=True))
    answer_parts = [answer.content or ""]
    answer_parts += [call["function"]["name"] + call["function"]["arguments"] for call in answer.tool_calls]
    prompt, completion = count_tokens("".join(prompt_parts)), count_tokens("".join(answer_parts))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(request: ChatRequest, answer: Answer, completion_id: str) -> dict[str, Any]:
    """The ``chat.completion`` object for ``answer``."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": answer.refusal}
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": "fp_offline",
        "choices": [{"index": 0, "message": message, "finish_reason": answer.finish_reason, "logprobs": None}],
        "usage": usage(request, answer),
    }


def stream_events(request: ChatRequest, answer: Answer, completion_id: str) -> Iterator[str]:
    """The server-sent events of a streamed answer, ending with ``data: [DONE]``."""
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": "fp_offline",
    }

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

    yield event({"role": "assistant", "content": ""})
    text = answer.content or ""
    for start in range(0, len(text), _STREAM_PIECE):
        yield event({"content": text[start : start + _STREAM_PIECE]})
    for index, call in enumerate(answer.tool_calls):
        yield event({"tool_calls": [{"index": index, **call}]})
    yield event({}, answer.finish_reason)
    if (request.stream_options or {}).get("include_usage"):
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage(request, answer)})}\n\n"
    yield "data: [DONE]\n\n"


def error_response(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    """An OpenAI-style error body ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def _fault_response(answer: Answer) -> JSONResponse:
    rule = answer.rule or "?"
    if answer.fault == "rate_limit":
        message = f"Rate limit reached for the offline model (simulated by rule {rule!r})."
        return error_response(429, message, "requests", "rate_limit_exceeded")
    message = f"The offline model had a server error (simulated by rule {rule!r})."
    return error_response(500, message, "server_error", "server_error")


async def _parse(request: Request) -> ChatRequest | JSONResponse:
    try:
        payload = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return error_response(400, f"The request body is not valid JSON: {exc}", "invalid_request_error")
    if not isinstance(payload, dict):
        return error_response(400, "The request body must be a JSON object.", "invalid_request_error")
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return error_response(400, f"Invalid chat request: {problems}", "invalid_request_error")


async def _pause(request: Request, seconds: float) -> None:
    """Sleep ``seconds``, returning early once the client has gone away."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.05))
        if await request.is_disconnected():
            return


def build_app(scenario: Scenario) -> FastAPI:
    """Build the ASGI app serving ``scenario`` (kept on ``app.state.scenario``)."""
    app = FastAPI(title="AgentOS offline model", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scenario = scenario
    sequence = itertools.count(1)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "agentos-offline"}
            for name in scenario.served_models()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        parsed = await _parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        answer = plan_answer(scenario, parsed)
        if answer.delay_s > 0:
            await _pause(request, answer.delay_s)
        if answer.fault is not None:
            return _fault_response(answer)
        completion_id = f"chatcmpl-offline-{next(sequence):06d}"
        if parsed.stream:
            events = stream_events(parsed, answer, completion_id)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(completion_body(parsed, answer, completion_id))

    return app
