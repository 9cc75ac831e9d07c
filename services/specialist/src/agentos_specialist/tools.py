"""Tools specialists can call. A charter lists the tools its agent may use; nothing else is offered,
and a call to any other tool is refused whatever the model asks.

Tools that write carry an idempotency key derived from the task that called them, so a task
re-run after a crash does not write twice.

Every call — listed or not — is first put to the policy service (fail closed), so every attempt is
in the log as ``policy.decided``. A denial is returned to the model as ``DENIED: …``; a denial that
must end the task (a loop, an approval that expired, no policy answer) is left in
``ToolContext.stop`` for the agent loop. Outside actions (tools that write outside AgentOS) are
then executed and their outcome published as ``action.executed``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import httpx
from agentos_kernel import Bus, control
from agentos_kernel.faults import FAULTS
from agentos_kernel.policy import PolicyClient, summarize_args
from agentos_kernel.secrets import resolve as resolve_secrets
from agentos_schemas import Event, derived_event_id
from agentos_schemas.events import ContextReady, Effect, MemoryProposed
from agentos_schemas.events.memory import content_key
from agentos_schemas.events.policy import ActionExecuted
from agentos_schemas.rpc import PolicyDecision, PolicyRequest

from agentos_specialist import effects


@dataclass
class ToolContext:
    """What a tool knows about the call: the task's context event and the bus."""

    bus: Bus
    event: Event[ContextReady]
    stop: PolicyDecision | None = None
    """Set when a policy denial must end the task rather than be shown to the model."""
    started: Awaitable[Any] | None = None
    """The task's ``task.started`` publish, still in flight while the first policy decision is
    asked; :meth:`effects_may_start` waits for it before the first model call."""
    effects: list[Effect] = field(default_factory=list)
    """What each write tool call really did (see :mod:`agentos_specialist.effects`), in call order."""
    fact_id: str = ""
    """The id of the event the last write tool published (``memory.proposed``), for its effect."""

    async def effects_may_start(self) -> None:
        """Return once the task's start is stored: nothing with an effect or a cost runs before."""
        if self.started is not None:
            await self.started


ToolAction = Literal["tool_call", "memory_write", "outside_action"]
"""What the policy is asked about for a tool's calls: :data:`agentos_schemas.rpc.ActionKind` but ``model_call``."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[ToolContext, dict[str, Any]], Awaitable[str]]
    action: ToolAction = "tool_call"
    """What the policy is asked about: ``tool_call``, ``memory_write`` or ``outside_action``."""
    resource: str = ""

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class DocumentIndex:
    """A small BM25 index over Markdown documents (the offline research corpus)."""

    docs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, folder: Path | None = None) -> DocumentIndex:
        root = folder or Path(str(resources.files("agentos_specialist") / "documents"))
        return cls({p.stem: p.read_text() for p in sorted(root.glob("*.md"))})

    def search(self, query: str, k: int = 3) -> list[tuple[str, float]]:
        terms = _WORD.findall(query.lower())
        tokenized = {name: _WORD.findall(text.lower()) for name, text in self.docs.items()}
        avg = sum(len(t) for t in tokenized.values()) / max(len(tokenized), 1)
        scores: dict[str, float] = {}
        for name, tokens in tokenized.items():
            tf = Counter(tokens)
            score = 0.0
            for term in set(terms):
                df = sum(1 for t in tokenized.values() if term in t)
                if not df or not tf[term]:
                    continue
                idf = math.log(1 + (len(tokenized) - df + 0.5) / (df + 0.5))
                score += idf * tf[term] * 2.2 / (tf[term] + 1.2 * (0.25 + 0.75 * len(tokens) / avg))
            if score > 0:
                scores[name] = score
        return sorted(scores.items(), key=lambda kv: -kv[1])[:k]


async def propose_memory(ctx: ToolContext, args: dict[str, Any]) -> str:
    """Publish ``memory.proposed`` for the finding; the memory service stores it for review."""
    content = str(args.get("content", "")).strip()
    if not content:
        raise ValueError("content is required")
    data = ctx.event.data
    # One entry per (goal, agent, content): a retried task or a replayed proposal is the same entry.
    entry_id = derived_event_id(ctx.event.tenant, data.goal_id, data.agent, "memory", content_key(content[:8000]))
    proposal = MemoryProposed(
        entry_id=entry_id,
        kind="episodic",
        content=content[:8000],
        tags=tuple(str(t) for t in args.get("tags", ()))[:10],
        agent=data.agent,
        goal_id=data.goal_id,
        task_id=data.task_id,
        step_id=data.step_id,
    )
    # One proposal event per task attempt: a later attempt re-proposing the entry is its own fact.
    event = ctx.bus.new(proposal, cause=ctx.event, id=derived_event_id(entry_id, "proposed", data.task_id))
    await ctx.bus.publish(event)
    ctx.fact_id = event.id
    return json.dumps({"proposed": entry_id, "status": "awaiting review"})


PROPOSE_MEMORY = Tool(
    "propose_memory",
    "Propose a finding for long-term memory; it becomes permanent after review.",
    {
        "type": "object",
        "properties": {
            "content": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["content"],
    },
    propose_memory,
    "memory_write",
    "memory:episodic",
)


async def fetch_url(ctx: ToolContext, args: dict[str, Any]) -> str:
    """The text of the page at ``url`` (its first 4000 characters)."""
    url = str(args.get("url", ""))
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.text[:4000]


FETCH_URL = Tool(
    "fetch_url",
    "Fetch a web page over HTTP(S) and return its text.",
    {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
    fetch_url,
)


def build_tools(index: DocumentIndex) -> dict[str, Tool]:
    """Every tool a charter may list, by name; ``search_documents`` searches ``index``."""

    async def search_documents(ctx: ToolContext, args: dict[str, Any]) -> str:
        hits = index.search(str(args.get("query", "")), int(args.get("k", 2)))
        return (
            json.dumps(
                [{"document": name, "score": round(score, 3), "text": index.docs[name][:1500]} for name, score in hits]
            )
            if hits
            else "no documents match"
        )

    search = Tool(
        "search_documents",
        "Full-text search over the research library; returns the best documents.",
        {
            "type": "object",
            "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
            "required": ["query"],
        },
        search_documents,
    )
    return {t.name: t for t in (search, PROPOSE_MEMORY, FETCH_URL, SEND_EMAIL)}


def idempotency_key(ctx: ToolContext, name: str, args: dict[str, Any]) -> str:
    """The same write asked again by the same task (a retry, a resumed conversation) has the same key."""
    return derived_event_id(ctx.event.data.task_id, name, json.dumps(args, sort_keys=True, default=str))


async def send_email(ctx: ToolContext, args: dict[str, Any]) -> str:
    """Write the message to the outbox folder (``AGENTOS_OUTBOX_DIR``, default ``<state dir>/outbox``), once."""
    outbox = Path(os.environ.get("AGENTOS_OUTBOX_DIR") or ctx.bus.settings.state_dir / "outbox")
    outbox.mkdir(parents=True, exist_ok=True)
    key = idempotency_key(ctx, "send_email", args)
    target = outbox / f"{key}.json"
    if target.exists():
        return f"already sent: {key}"
    message = {
        "to": str(args.get("to", "")),
        "subject": str(args.get("subject", "")),
        "body": str(args.get("body", "")),
        "idempotency_key": key,
        "agent": ctx.event.data.agent,
        "task_id": ctx.event.data.task_id,
    }
    partial = target.with_suffix(".tmp")
    partial.write_text(json.dumps(message, indent=2))
    partial.replace(target)
    return json.dumps({"sent": key, "to": message["to"]})


SEND_EMAIL = Tool(
    "send_email",
    "Send an e-mail (written to the outbox, which a mail relay delivers).",
    {
        "type": "object",
        "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
        "required": ["to", "subject", "body"],
    },
    send_email,
    "outside_action",
    "email:outbound",
)


async def call_tool(
    tools: dict[str, Tool], allowed: tuple[str, ...], ctx: ToolContext, name: str, arguments: str, call_id: str = ""
) -> tuple[str, bool]:
    """Run one tool call after the policy allowed it; returns (result text for the model, ok). Never
    raises. A call of a tool that writes leaves its :class:`Effect` in ``ctx.effects``."""
    tool = tools.get(name)
    writes = tool is not None and tool.action in effects.WRITES
    ctx.fact_id = ""
    result, ok, decision = await _call_tool(tool, allowed, ctx, name, arguments, call_id)
    if tool is not None and writes:
        if decision is not None and decision.decision != "allow":
            ctx.effects.append(effects.refused(name, tool.action, decision))
        elif decision is None or (name not in allowed):
            ctx.effects.append(effects.not_run(name, tool.action, result))
        else:
            ctx.effects.append(effects.ran(name, tool.action, result, ok, ctx.fact_id))
    return result, ok


async def _call_tool(
    tool: Tool | None, allowed: tuple[str, ...], ctx: ToolContext, name: str, arguments: str, call_id: str
) -> tuple[str, bool, PolicyDecision | None]:
    try:
        args = json.loads(arguments or "{}")
        if not isinstance(args, dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as exc:
        args, error = {"_unparsed": str(arguments)[:200]}, f"ERROR: {name} failed: {type(exc).__name__}: {exc}"
    else:
        error = None
    request = policy_request(ctx, tool, name, args, call_id)
    decision = await PolicyClient.for_bus(ctx.bus).decide_and_wait(request, ctx.event)
    if decision.decision != "allow":
        if decision.code in ("loop", "expired", "unreachable", "unavailable", "no_policy", "error"):
            ctx.stop = decision
        return f"DENIED: {name}: {'; '.join(decision.reasons)}"[:1000], False, decision
    if name not in allowed or tool is None:
        return (
            f"ERROR: tool {name!r} is not allowed for this agent (allowed: {', '.join(allowed) or 'none'})",
            False,
            decision,
        )
    if error is not None:
        return error[:1000], False, None
    if tool.action == "outside_action":
        return (*await _outside(ctx, tool, args, decision), decision)
    try:
        # Secrets are resolved only now, after the policy saw their names; a kill switch pauses
        # (and, if it lands mid-call, re-runs) read-only tools. Outside actions are never re-run.
        return await control.run_paused(lambda: tool.run(ctx, resolve_secrets(args))), True, decision
    except Exception as exc:  # noqa: BLE001  (boundary: a failed tool call is the tool's result for the model)
        FAULTS.note(f"run the tool {name}", exc)
        return f"ERROR: {name} failed: {type(exc).__name__}: {exc}"[:1000], False, decision


def policy_request(ctx: ToolContext, tool: Tool | None, name: str, args: dict[str, Any], call_id: str) -> PolicyRequest:
    """What the policy is asked for one tool call (an unknown tool is asked about too, and denied)."""
    data = ctx.event.data
    return PolicyRequest(
        tenant=ctx.event.tenant,
        principal=f"agent:{data.agent}",
        agent=data.agent,
        goal_id=data.goal_id,
        task_id=data.task_id,
        action=tool.action if tool else "tool_call",
        resource=(tool.resource if tool and tool.resource else name),
        tool=name,
        args=summarize_args(args),
        call_id=call_id or idempotency_key(ctx, name, args),
    )


async def _outside(ctx: ToolContext, tool: Tool, args: dict[str, Any], decision: PolicyDecision) -> tuple[str, bool]:
    """Execute an allowed outside action and record its outcome as ``action.executed``."""
    key = idempotency_key(ctx, tool.name, args)
    try:
        result, ok = await tool.run(ctx, resolve_secrets(args)), True
    except Exception as exc:  # noqa: BLE001  (boundary: the result, failed, is recorded as action.executed)
        result, ok = f"ERROR: {tool.name} failed: {type(exc).__name__}: {exc}"[:1000], False
    outcome = "failed" if not ok else "duplicate" if result.startswith("already ") else "succeeded"
    data = ctx.event.data
    fact = ActionExecuted(
        decision_id=decision.decision_id,
        action=tool.action,
        resource=tool.resource or tool.name,
        tool=tool.name,
        agent=data.agent,
        goal_id=data.goal_id,
        task_id=data.task_id,
        idempotency_key=key,
        outcome=outcome,
        detail=result[:500],
    )
    event = ctx.bus.new(
        fact,
        cause=ctx.event,
        principal=f"agent:{data.agent}",
        id=derived_event_id(key, "executed", decision.decision_id),
    )
    await ctx.bus.publish(event)
    ctx.fact_id = event.id
    return result, ok
