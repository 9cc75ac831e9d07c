"""The agent loop: ask the model, run the tools it calls (bounded), validate its final answer
against the charter's output schema, and re-ask with the validation error (bounded).

Every model call is first put to the policy service (fail closed): a deny ends the task (code
``budget`` when a budget is exhausted, ``loop`` for runaway behaviour, else ``denied``); an
approval is waited for, and so is an outage of the decision point (asked again with backoff; if
it outlasts the client's wait the task ends ``unavailable``, which the orchestrator retries
without counting it as an attempt); an allowed call's budget reservation is settled with its real
cost. Each call's ``call_id`` is its task, attempt and turn (``<task_id>:model:<messages so far>``),
so the same call re-run after a crash is the same call to the policy and keeps its reservation. A
call that asks for tools is settled while its tools run, one whose answer is invalid before the
next model call is decided, and any call of a task that fails when it ends; the settlement of the
call whose answer completes the task rides on ``task.completed`` (:attr:`Outcome.settlement`),
which saves the step one durable event."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
from agentos_kernel.faults import contained
from agentos_kernel.llm import LLM, ModelCallFailed
from agentos_kernel.policy import PolicyClient, estimate_cost, model_prices, retryable
from agentos_kernel.redact import redact
from agentos_kernel.tasks import wait_done
from agentos_schemas.charter import Charter
from agentos_schemas.events import Effect, ModelCall, Settlement
from agentos_schemas.money import usd
from agentos_schemas.rpc import PolicyDecision, PolicyRequest

from agentos_specialist.toolpath import call_tool, listed
from agentos_specialist.tools import Tool, ToolContext


@dataclass
class Progress:
    """A task's conversation so far: what a snapshot stores and a resumed task continues from."""

    messages: list[dict[str, Any]]
    calls: list[ModelCall] = field(default_factory=list)
    tool_rounds: int = 0
    tool_calls: int = 0
    output_retries: int = 0
    effects: list[Effect] = field(default_factory=list)
    """What each write tool call really did, for ``task.completed`` (snapshotted with the rest)."""
    tainted_by: list[str] = field(default_factory=list)
    """Tools with untrusted output the task has read (a resumed task stays tainted)."""


@dataclass
class Outcome:
    ok: bool
    output: dict[str, Any] | None = None
    reason: str = ""
    retryable: bool = True
    code: str = "error"
    settlement: Settlement | None = None
    """The settlement of the model call that gave a successful output, for ``task.completed``."""
    settle_separately: Callable[[], Awaitable[None]] | None = None
    """Publishes that settlement as its own ``budget.settlement_requested`` instead, for when
    ``task.completed`` does not carry it after all (its start could not be stored, or an earlier
    attempt's result is stored under the same id)."""


@dataclass
class _Unsettled:
    """A model call made whose settlement is not published yet."""

    policy: PolicyClient
    decision: PolicyDecision
    request: PolicyRequest
    calls: list[ModelCall]

    async def publish(self, cause: Any) -> None:
        await self.policy.settle(self.decision, self.request, self.calls, cause)


Snapshot = Callable[[Progress], Awaitable[None]]


def _cost(calls: list[ModelCall]) -> float:
    return sum(c.cost_usd for c in calls)


async def run_agent(
    llm: LLM, charter: Charter, progress: Progress, tools: dict[str, Tool], tool_ctx: ToolContext, snapshot: Snapshot
) -> Outcome:
    unsettled: list[_Unsettled] = []
    try:
        outcome = await _loop(llm, charter, progress, tools, tool_ctx, snapshot, unsettled)
    except BaseException:  # the attempt fails (or is cancelled); the calls it made are still reported
        # Best effort, so the attempt's own error is what comes out (a reservation left unsettled is
        # charged at its estimate once it expires); cancelled meanwhile, the report goes on, shielded.
        reporting = asyncio.ensure_future(_settle(unsettled, tool_ctx))
        with (
            contextlib.suppress(asyncio.CancelledError),
            contained("report a failed attempt's model calls (best effort: any failure)"),
        ):
            await asyncio.shield(reporting)
        raise
    if outcome.ok and len(unsettled) == 1:
        last = unsettled[0]
        outcome.settlement = last.policy.settlement(last.decision, last.calls)
        outcome.settle_separately = lambda: last.publish(tool_ctx.event)
    else:
        await _settle(unsettled, tool_ctx)
    return outcome


async def _settle(unsettled: list[_Unsettled], tool_ctx: ToolContext) -> None:
    while unsettled:
        await unsettled[0].publish(tool_ctx.event)
        unsettled.pop(0)


async def _loop(
    llm: LLM,
    charter: Charter,
    progress: Progress,
    tools: dict[str, Tool],
    tool_ctx: ToolContext,
    snapshot: Snapshot,
    unsettled: list[_Unsettled],
) -> Outcome:
    chain = [charter.model, *charter.fallbacks]
    specs = [t.spec() for n, t in tools.items() if listed(charter.tools, n)]
    tool_ctx.tainted_by = progress.tainted_by
    response_format = _response_format(charter)
    while True:
        if _cost(progress.calls) > charter.budget_usd:
            return Outcome(
                False, reason=f"task budget {usd(charter.budget_usd)} exhausted", retryable=False, code="budget"
            )
        kwargs: dict[str, Any] = {"response_format": response_format}
        if specs:
            kwargs["tools"] = specs
        response = await _call_model(llm, charter, chain, progress, tool_ctx, kwargs, unsettled)
        if isinstance(response, Outcome):
            return response
        message = response.choices[0].message
        if message.tool_calls:  # not the task's answer: its call is settled while the tools run
            settling = asyncio.ensure_future(_settle(unsettled, tool_ctx))
            try:
                stop = await _run_tools(charter, progress, message, tools, tool_ctx)
            finally:
                await wait_done(settling)
            settling.result()
            if stop is not None:
                return stop
            await snapshot(progress)
            continue
        outcome = _validate(charter, progress, message.content or "")
        if outcome is not None:
            return outcome
        await snapshot(progress)


def _response_format(charter: Charter) -> dict[str, Any]:
    """The structured output asked of the model: JSON matching the charter's output schema."""
    return {
        "type": "json_schema",
        "json_schema": {"name": f"{charter.name.replace('-', '_')}_output", "schema": charter.output_schema},
    }


async def _call_model(
    llm: LLM,
    charter: Charter,
    chain: list[str],
    progress: Progress,
    tool_ctx: ToolContext,
    kwargs: dict[str, Any],
    unsettled: list[_Unsettled],
) -> Any:
    """Settle the previous call (an invalid answer's), ask the policy, then the model; returns the
    response (its call is left in ``unsettled``), or the Outcome that ends the task."""
    await _settle(unsettled, tool_ctx)
    policy = PolicyClient.for_bus(tool_ctx.bus)
    kwargs.setdefault("max_tokens", policy.settings.est_output_tokens)  # the reservation bounds the output
    request = _model_request(llm, charter, chain, progress, tool_ctx, kwargs["max_tokens"])
    decision = await policy.decide_and_wait(request, tool_ctx.event)
    if decision.decision != "allow":
        return denied(decision, "model call")
    await tool_ctx.effects_may_start()
    try:
        response, calls = await llm.complete(chain, progress.messages, **kwargs)
    except ModelCallFailed as exc:
        progress.calls += exc.calls
        unsettled.append(_Unsettled(policy, decision, request, exc.calls))
        if exc.transient:  # the providers are down or overloaded: wait it out, as for any outage
            return Outcome(False, reason=f"model provider unavailable: {exc}", retryable=True, code="unavailable")
        return Outcome(False, reason=str(exc), code="model_unavailable")
    except Exception:  # no call was made (e.g. a guard refused it): its reservation is released
        unsettled.append(_Unsettled(policy, decision, request, []))
        raise
    progress.calls += calls
    unsettled.append(_Unsettled(policy, decision, request, calls))
    return response


def _model_request(
    llm: LLM, charter: Charter, chain: list[str], progress: Progress, tool_ctx: ToolContext, output_tokens: int
) -> PolicyRequest:
    data = tool_ctx.event.data
    usd, tokens = estimate_cost(progress.messages, *model_prices(llm, chain), output_tokens)
    return PolicyRequest(
        tenant=tool_ctx.event.tenant,
        principal=f"agent:{charter.name}",
        action="model_call",
        resource=chain[0],
        agent=charter.name,
        goal_id=data.goal_id,
        task_id=data.task_id,
        args={"fallbacks": ",".join(chain[1:])},
        estimated_cost_usd=usd,
        estimated_tokens=tokens,
        call_id=f"{data.task_id}:model:{len(progress.messages)}",
    )


def denied(decision: PolicyDecision, what: str) -> Outcome:
    """The task's end when the policy says no: budget and loop keep their codes; a decision that
    could not be had (the policy or its store unavailable) is ``unavailable``, retried without
    counting; no policy or a policy error may be retried; anything else is a final denial."""
    reason = f"policy denied the {what} ({decision.code}): {'; '.join(decision.reasons)}"
    if decision.code in ("budget", "loop"):
        return Outcome(False, reason=reason, retryable=False, code=decision.code)
    if retryable(decision):
        return Outcome(False, reason=reason, retryable=True, code="unavailable")
    return Outcome(False, reason=reason, retryable=decision.code in ("no_policy", "error"), code="denied")


async def _run_tools(
    charter: Charter, progress: Progress, message: Any, tools: dict[str, Tool], tool_ctx: ToolContext
) -> Outcome | None:
    if progress.tool_rounds >= charter.max_tool_rounds:
        last = next((m["content"] for m in reversed(progress.messages) if m.get("role") == "tool"), "")
        return Outcome(
            False,
            reason=f"tool loop exceeded {charter.max_tool_rounds} rounds; last tool result: {str(last)[:300]}",
            code="tool_loop",
        )
    progress.tool_rounds += 1
    progress.messages.append(_tool_request(message))
    for tc in message.tool_calls:
        result, _ = await call_tool(
            tools,
            charter.tools,
            tool_ctx,
            tc.function.name,
            tc.function.arguments,
            call_id=f"{tool_ctx.event.data.task_id}:{progress.tool_rounds}:{tc.id}",
        )
        progress.tool_calls += 1
        progress.effects += tool_ctx.effects
        tool_ctx.effects.clear()
        progress.messages.append({"role": "tool", "tool_call_id": tc.id, "content": redact(result)})
        if tool_ctx.stop is not None:
            return denied(tool_ctx.stop, f"tool call {tc.function.name!r}")
        if tool_ctx.failure is not None:
            return Outcome(False, reason=tool_ctx.failure, retryable=True, code="error")
    return None


def _tool_request(message: Any) -> dict[str, Any]:
    """The model's message that calls tools, as the assistant turn of the conversation."""
    return {
        "role": "assistant",
        "content": message.content or None,
        "tool_calls": [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.function.name, "arguments": tc.function.arguments},
            }
            for tc in message.tool_calls
        ],
    }


_VALIDATORS: dict[int, tuple[dict[str, Any], Any]] = {}


def _validator(schema: dict[str, Any]) -> Any:
    """One checked validator per output schema (checking a schema costs more than using it)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        cached = _VALIDATORS[id(schema)] = (schema, cls(schema))
    return cached[1]


def _validate(charter: Charter, progress: Progress, content: str) -> Outcome | None:
    """Outcome when the answer is final (valid, or invalid too often); None to ask again."""
    try:
        output = json.loads(content)
        error_found = jsonschema.exceptions.best_match(_validator(charter.output_schema).iter_errors(output))
        if error_found is not None:
            raise error_found
        if not isinstance(output, dict):
            raise ValueError("the answer must be a JSON object")
        return Outcome(True, output=output)
    except (ValueError, jsonschema.ValidationError) as exc:
        error = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
        if progress.output_retries >= charter.output_retries:
            return Outcome(
                False,
                reason=f"invalid output after {progress.output_retries + 1} attempts: {error[:300]}",
                code="invalid_output",
            )
        progress.output_retries += 1
        progress.messages += [
            {"role": "assistant", "content": content},
            {
                "role": "user",
                "content": f"Your answer was not valid: {error[:500]}. Answer again with JSON matching the schema.",
            },
        ]
        return None
