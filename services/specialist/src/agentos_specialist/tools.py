"""Tools specialists can call, and the built-in ones. A charter lists the tools its agent may use;
nothing else is offered, and a call to any other tool is refused whatever the model asks.

A :class:`Tool` is one tool on the one tool path (:mod:`agentos_specialist.toolpath`): the
built-ins here (the ``builtin`` connector, classified in ``connectors/builtin.yaml``) and every
MCP connector's tools (:mod:`agentos_specialist.connectors`) alike. Tools that write carry an
idempotency key derived from the task and the call, so a task re-run after a crash does not
write twice.
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
from agentos_kernel import Bus
from agentos_schemas import Event, derived_event_id
from agentos_schemas.events import ContextReady, Effect, MemoryProposed
from agentos_schemas.events.memory import content_key
from agentos_schemas.rpc import PolicyDecision
from agentos_schemas.rpc.policy import ToolClassification


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
    call_key: str = ""
    """The idempotency key of the write being run (sent to an MCP server as ``_meta``)."""
    tainted_by: list[str] = field(default_factory=list)
    """Tools with untrusted output this task has read (the policy's taint rule weighs them)."""
    failure: str | None = None
    """Set when a tool's connector is degraded: the task fails with this reason."""

    async def effects_may_start(self) -> None:
        """Return once the task's start is stored: nothing with an effect or a cost runs before."""
        if self.started is not None:
            await self.started


ToolAction = Literal["tool_call", "memory_write", "outside_action"]
"""What the policy is asked about for a tool's calls: :data:`agentos_schemas.rpc.ActionKind` but ``model_call``."""
_ACTIONS: dict[str, ToolAction] = {"read": "tool_call", "write": "outside_action", "memory": "memory_write"}
_ACCESS: dict[str, Literal["read", "write", "memory"]] = {
    "tool_call": "read",
    "outside_action": "write",
    "memory_write": "memory",
}


def action_of(access: str) -> ToolAction:
    """The policy action of a tool classified ``read``, ``write`` or ``memory``."""
    return _ACTIONS[access]


class ToolError(Exception):
    """A tool reported that its call failed (the message is shown to the model as the result)."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[ToolContext, dict[str, Any]], Awaitable[str]]
    action: ToolAction = "tool_call"
    """What the policy is asked about: ``tool_call``, ``memory_write`` or ``outside_action``."""
    resource: str = ""
    classification: ToolClassification | None = None
    """Read or write, data classes, risk, idempotence, untrusted output (default: from ``action``)."""
    connector: str = "builtin"
    max_result_bytes: int = 32_000
    """A larger result is cut to this for the prompt and kept whole as ``tool.result_stored``."""

    def __post_init__(self) -> None:
        if self.classification is None:
            self.classification = ToolClassification(access=_ACCESS[self.action])

    @property
    def classified(self) -> ToolClassification:
        assert self.classification is not None
        return self.classification

    @property
    def function(self) -> str:
        """The name the model calls it by: function names may not contain dots (``git.log`` is
        ``git__log``)."""
        return self.name.replace(".", "__")

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.function, "description": self.description, "parameters": self.parameters},
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
    """The same write asked again by the same task (a retry, a resumed conversation) has the same
    key: it is derived from the task and the call (the tool and its arguments)."""
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
