"""Pure functions of the memory service: entry ids, rows built from events, summaries, search picks.

Nothing here does I/O, so all of it is unit-tested without NATS or Postgres.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from agentos_schemas.events import MemoryProposed, TaskCompleted, TaskReviewed
from agentos_schemas.events.memory import content_key
from agentos_schemas.rpc import MemoryEntry, MemoryKind

Outcome = Literal["committed", "rejected"]
Status = Literal["proposed", "committed", "rejected"]

WORKING_SUMMARY_CHARS = 4000
"""Working-memory content is cut to this many characters."""
ALWAYS_TAG = "always"
"""Semantic entries with this tag are included in every search of their tenant."""
ALWAYS_FLOOR = 0.001
"""Score of an ``always`` entry that does not match the query: below any real match."""
ANY_TENANT = "*"
"""Tenant of entries every tenant may read (curated files without a ``tenant:``)."""
CURATOR = "curated"
"""Reviewer recorded for entries loaded from curated files."""

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class EntryRow:
    """One row of ``memory.entries`` as the service writes it."""

    id: str
    tenant: str
    kind: MemoryKind
    content: str
    status: Status
    tags: tuple[str, ...] = ()
    agent: str | None = None
    goal_id: str | None = None
    task_id: str | None = None
    step_id: str | None = None
    event_id: str | None = None
    source: str | None = None
    reviewer: str | None = None
    created_at: dt.datetime | None = None
    duplicate_of: str | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class Review:
    """A verdict turned into the status it gives, and who gave it."""

    status: Outcome
    reviewer: str


def status_for(verdict: Literal["accepted", "rejected"]) -> Outcome:
    """``accepted`` commits an entry; ``rejected`` rejects it."""
    return "committed" if verdict == "accepted" else "rejected"


def task_review(data: TaskReviewed) -> Review:
    """The review a QA verdict gives the entries proposed by the reviewed task."""
    return Review(status_for(data.verdict), data.reviewer)


def working_entry_id(task_id: str) -> str:
    """The id of a task's working-memory entry: one per task attempt, so a redelivery is a no-op."""
    return f"working:{task_id}"


def semantic_entry_id(file_name: str) -> str:
    """The id of a curated entry: its file name, so an edited file updates the same entry."""
    return f"semantic:{file_name}"


def proposal_row(event_id: str, tenant: str, data: MemoryProposed, at: dt.datetime | None) -> EntryRow:
    """A proposed entry with its full provenance (the proposing event, agent, goal, task, step)."""
    return EntryRow(
        id=data.entry_id,
        tenant=tenant,
        kind=data.kind,
        content=data.content,
        status="proposed",
        tags=tuple(data.tags),
        agent=data.agent,
        goal_id=data.goal_id,
        task_id=data.task_id,
        step_id=data.step_id,
        event_id=event_id,
        created_at=at,
    )


def working_row(event_id: str, tenant: str, data: TaskCompleted, at: dt.datetime | None) -> EntryRow:
    """The working-memory entry of a completed task: committed at once, scoped to its goal."""
    header = f"Step {data.step_id} by {data.agent}:"
    body = summarize_output(data.output, WORKING_SUMMARY_CHARS - len(header) - 1)
    return EntryRow(
        id=working_entry_id(data.task_id),
        tenant=tenant,
        kind="working",
        content=f"{header}\n{body}",
        status="committed",
        tags=(data.step_id,),
        agent=data.agent,
        goal_id=data.goal_id,
        task_id=data.task_id,
        step_id=data.step_id,
        event_id=event_id,
        reviewer=None,
        created_at=at,
    )


def after_review(row: EntryRow, review: Review | None) -> EntryRow:
    """``row`` as an earlier review of its task leaves it (events can arrive out of order).

    A proposal takes the review's status; a committed working entry only a rejection.
    """
    if review is None or (row.status != "proposed" and review.status != "rejected"):
        return row
    return replace(row, status=review.status, reviewer=review.reviewer)


DEDUP_REVIEWER = "memory:dedup"
"""Reviewer recorded on an entry the memory service refused as a duplicate."""


def similarity(a: str, b: str) -> float:
    """How alike two contents are, 0..1, ignoring case, punctuation and spacing (1: the same key)."""
    ka, kb = content_key(a), content_key(b)
    if ka == kb:
        return 1.0
    matcher = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    return matcher.ratio() if matcher.real_quick_ratio() > 0 else 0.0


def duplicate(content: str, candidates: Sequence[tuple[str, str]], threshold: float) -> tuple[str, str] | None:
    """The first of ``candidates`` (``(id, content)`` of committed entries, best match first) that
    ``content`` duplicates, with the reason; None if none is at least ``threshold`` alike."""
    for entry_id, other in candidates:
        score = similarity(content, other)
        if score >= threshold:
            how = "the same text" if score == 1.0 else f"{score:.0%} alike"
            return entry_id, f"duplicate of committed entry {entry_id} ({how})"
    return None


def refused_duplicate(row: EntryRow, of: str, reason: str) -> EntryRow:
    """``row`` refused as a duplicate of entry ``of``: kept, with the reason, but never committed."""
    return replace(row, status="rejected", reviewer=DEDUP_REVIEWER, duplicate_of=of, refusal=reason)


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…" if limit > 0 else ""


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return " ".join(value.split())
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def summarize_output(output: Mapping[str, Any], limit: int = WORKING_SUMMARY_CHARS) -> str:
    """A compact, readable summary of a structured task output: one ``key: value`` line per field.

    Strings are shown as text with whitespace collapsed, everything else as compact JSON. Each
    field gets a fair share of ``limit`` so one long field cannot push out all the others.
    """
    if not output:
        return "(empty output)"
    share = max(120, limit // len(output))
    lines = [clip(f"{key}: {_compact(value)}", share) for key, value in output.items()]
    return clip("\n".join(lines), limit)


def or_query(text: str) -> str:
    """The words of a natural-language query joined by ``or``, for ``websearch_to_tsquery``.

    Matching any word (not all of them) lets a question find entries that share only part of
    its vocabulary; ranking then prefers entries that match more of it, closer together.
    """
    return " or ".join(_WORD.findall(text.replace("_", " ")))


def pick(pinned: Sequence[MemoryEntry], matched: Sequence[MemoryEntry], k: int) -> list[MemoryEntry]:
    """At most ``k`` entries: the ``always`` entries first get a seat, the best matches fill the rest,
    and the result is ordered by score (ties: newer first)."""
    chosen = list(pinned[:k])
    seen = {e.id for e in chosen}
    for entry in matched:
        if len(chosen) >= k:
            break
        if entry.id not in seen:
            chosen.append(entry)
            seen.add(entry.id)
    never = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(chosen, key=lambda e: (-e.score, -(e.created_at or never).timestamp(), e.id))
