"""Context assembly: what one agent sees for one task, fitted to its token budget. No I/O.

Inputs are the agent's charter, the ``task.assigned`` payload, the memory entries the memory
service returned and a token-counting function; the output is the chat messages and the
:class:`ContextManifest` that records exactly what went in.

Budget rule (``charter.context_tokens``): the system prompt, the task and the rejection feedback
are never dropped. When the parts do not fit, memory entries are dropped lowest score first;
if that is not enough, hand-off items are truncated (largest first, each keeping a
``…[truncated N tokens]`` marker). Every drop or cut is listed in ``manifest.trimmed``.

Each distinct text is counted once per assembly (the counts are remembered for that assembly
only). The system prompt depends on the charter alone, so a caller may build it once per charter
with :func:`prepare_system` and pass it in; otherwise it is built and counted here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentos_schemas.charter import Charter
from agentos_schemas.events import ContextManifest, TaskAssigned
from agentos_schemas.rpc import MemoryEntry

from agentos_context_manager.budget import HandoffItem, fit_handoff, fit_memory
from agentos_context_manager.tokens import memoized

Counter = Callable[[str], int]

PARTS = ("system", "task", "handoff", "memory", "feedback")
HANDOFF_HEADER = "# Hand-off from earlier steps"
MEMORY_HEADER = (
    "# Relevant memory\n"
    "(working = notes from this goal; episodic = findings from earlier goals; semantic = curated knowledge)"
)
_LABELS = {"episodic": " (finding from an earlier goal)", "working": "", "semantic": ""}


@dataclass(frozen=True)
class Assembly:
    """The assembled context: chat messages plus the manifest of what went into them."""

    messages: tuple[dict[str, Any], ...]
    manifest: ContextManifest


def compact_json(value: Any) -> str:
    """``value`` as compact JSON (no spaces, non-ASCII kept, unknown types as strings)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def system_prompt(charter: Charter) -> str:
    """The charter's identity, instructions, allowed tools and output contract."""
    tools = ", ".join(charter.tools) if charter.tools else "none (answer from the context alone)"
    lines = [
        f"You are the {charter.name} agent of AgentOS.",
        f"agent: {charter.name}",
        f"role: {charter.role or charter.name}",
        f"charter: {charter.ref}",
        "",
        "## Instructions",
        charter.instructions or "Do the task you are given.",
        "",
        "## Tools",
        f"You may use only these tools: {tools}.",
        "",
        "## Output",
        f"Answer with JSON matching this schema: {compact_json(charter.output_schema)}",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class SystemPrompt:
    """A charter's system prompt and its token count (both depend on the charter alone)."""

    text: str
    tokens: int


def prepare_system(charter: Charter, count: Counter) -> SystemPrompt:
    """The system prompt of ``charter``, counted."""
    text = system_prompt(charter)
    return SystemPrompt(text, count(text))


def handoff_sources(task: TaskAssigned) -> tuple[str, ...]:
    """Step ids whose outputs are handed over: ``depends_on`` (then ``review_of``) present in the hand-off."""
    wanted = (*task.depends_on, *((task.review_of,) if task.review_of else ()))
    return tuple(dict.fromkeys(step for step in wanted if step in task.handoff))


def task_section(task: TaskAssigned, sources: Sequence[str]) -> str:
    """The task itself: goal, step, instruction, what it receives, and the review note."""
    inputs = ", ".join(sources) if sources else "none"
    lines = [
        "# Task",
        f"Goal: {task.goal_text}",
        f"Step: {task.step_id} (capability: {task.capability}, attempt {task.attempt})",
        f"Instruction: {task.instruction}",
        f"Inputs: outputs of steps {inputs} (see the hand-off)" if sources else "Inputs: none",
    ]
    if task.review_of:
        lines.append(f"This is a review of step {task.review_of}; the hand-off contains the output under review.")
    return "\n".join(lines)


def feedback_section(task: TaskAssigned) -> str:
    """The reason the previous attempt was rejected, or ``""``."""
    if not task.feedback:
        return ""
    return f"Your previous attempt was rejected: {task.feedback.strip().rstrip('.')}. Fix this."


def memory_line(entry: MemoryEntry) -> str:
    """One memory entry as ``- [<kind> <id>] <content>`` (episodic ones labelled as earlier findings)."""
    return f"- [{entry.kind} {entry.id}]{_LABELS.get(entry.kind, '')} {entry.content}"


def render_memory(entries: Sequence[MemoryEntry]) -> str:
    """The memory section, or ``""`` when there is none."""
    if not entries:
        return ""
    return "\n".join([MEMORY_HEADER, *(memory_line(e) for e in entries)])


def render_handoff(items: Sequence[HandoffItem]) -> str:
    """The hand-off section, or ``""`` when nothing is handed over."""
    if not items:
        return ""
    return "\n".join([HANDOFF_HEADER, *(item.render() for item in items)])


def in_scope(
    entries: Sequence[MemoryEntry], charter: Charter, task: TaskAssigned
) -> tuple[list[MemoryEntry], list[str]]:
    """Entries the agent may see, best first: its kinds only, no other goal's working memory, at most k."""

    def visible(e: MemoryEntry) -> bool:
        foreign = e.kind == "working" and e.goal_id not in (None, task.goal_id)
        return e.kind in charter.memory.kinds and not foreign

    allowed = [e for e in entries if visible(e)]
    notes: list[str] = []
    if len(allowed) < len(entries):
        notes.append(f"memory: {len(entries) - len(allowed)} out-of-scope entries ignored")
    unique = list({e.id: e for e in allowed}.values())
    ranked = sorted(unique, key=lambda e: -e.score)
    if len(ranked) > charter.memory.k:
        notes.extend(f"memory:{e.id}" for e in ranked[charter.memory.k :])
    return ranked[: charter.memory.k], notes


def context_chars(task: TaskAssigned, memory: Sequence[MemoryEntry]) -> int:
    """The size in characters of what varies per task (goal, instruction, feedback, hand-off,
    memory): what counting and fitting this task's context costs grows with it."""
    handoff = sum(len(compact_json(task.handoff[step])) for step in handoff_sources(task))
    return (
        len(task.goal_text)
        + len(task.instruction)
        + len(task.feedback or "")
        + handoff
        + sum(len(e.content) for e in memory)
    )


def assemble(
    charter: Charter,
    task: TaskAssigned,
    memory: Sequence[MemoryEntry],
    count: Counter,
    *,
    notes: Sequence[str] = (),
    system: SystemPrompt | None = None,
) -> Assembly:
    """Build the messages and manifest for ``task``, fitted to ``charter.context_tokens``.

    ``notes`` are recorded first in ``manifest.trimmed`` (e.g. ``"memory: unavailable"``).
    ``system`` is ``prepare_system(charter, count)`` when the caller keeps it per charter.
    """
    if system is None:
        system = prepare_system(charter, count)
    count = memoized(count, {system.text: system.tokens})
    budget = charter.context_tokens
    sources = handoff_sources(task)
    texts = {"system": system.text, "task": task_section(task, sources), "feedback": feedback_section(task)}
    fixed = sum(count(texts[part]) for part in texts)
    entries, trimmed = in_scope(memory, charter, task)
    trimmed = [*notes, *trimmed]
    items = [HandoffItem(step, compact_json(task.handoff[step])) for step in sources]
    full_handoff = count(render_handoff(items))
    kept, dropped = fit_memory(entries, budget - fixed - full_handoff, count, render_memory)
    trimmed.extend(f"memory:{e.id}" for e in dropped)
    texts["memory"] = render_memory(kept)
    room = budget - fixed - count(texts["memory"])
    items, cut = fit_handoff(items, room, count, render_handoff)
    trimmed.extend(f"handoff:{step} truncated" for step in cut)
    texts["handoff"] = render_handoff(items)
    if fixed > budget:
        trimmed.append(f"over budget: system, task and feedback need {fixed} tokens")
    return _package(charter, texts, count, kept, sources, trimmed)


def _package(
    charter: Charter,
    texts: dict[str, str],
    count: Counter,
    kept: Sequence[MemoryEntry],
    sources: tuple[str, ...],
    trimmed: Sequence[str],
) -> Assembly:
    """The fitted parts ``texts`` as chat messages, with the manifest of what went in (each part's
    tokens, the memory entries kept, the hand-off sources) and of what was cut (``trimmed``)."""
    tokens = {part: count(texts[part]) if texts[part] else 0 for part in PARTS}
    tokens["total"] = sum(tokens[part] for part in PARTS)
    user = "\n\n".join(texts[p] for p in ("task", "handoff", "memory", "feedback") if texts[p])
    manifest = ContextManifest(
        charter=charter.ref,
        memory_ids=tuple(e.id for e in kept),
        memory_kinds={e.id: e.kind for e in kept},
        tools=charter.tools,
        handoff_sources=sources,
        tokens=tokens,
        budget_tokens=charter.context_tokens,
        trimmed=tuple(trimmed),
    )
    messages = ({"role": "system", "content": texts["system"]}, {"role": "user", "content": user})
    return Assembly(messages=messages, manifest=manifest)
