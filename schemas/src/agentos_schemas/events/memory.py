"""Memory: proposals, reviews and commits. Nothing an agent writes is permanent until reviewed."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import Field

from agentos_schemas.events._base import EventData

_PUNCTUATION = re.compile(r"[^\w\s]+")


def content_key(content: str) -> str:
    """What two memory contents must share to be the same entry: the text case-folded, with
    punctuation dropped and whitespace collapsed (``"Brightline  charges $45."`` and
    ``"brightline charges 45"`` share a key)."""
    text = _PUNCTUATION.sub(" ", unicodedata.normalize("NFKC", content).casefold())
    return " ".join(text.split())


class MemoryProposed(EventData):
    event_name = "memory.proposed"

    entry_id: str
    """Derived from the tenant, goal, agent and the content's :func:`content_key`, so the same finding
    proposed again for the goal (a retried task, a replayed proposal) is the same entry."""
    kind: Literal["working", "episodic", "semantic"]
    content: str = Field(min_length=1, max_length=8000)
    tags: tuple[str, ...] = ()
    agent: str
    goal_id: str
    task_id: str
    step_id: str


class MemoryReviewed(EventData):
    """A human's (or QA agent's) verdict on proposed entries."""

    event_name = "memory.reviewed"

    entry_ids: tuple[str, ...]
    verdict: Literal["accepted", "rejected"]
    reviewer: str
    note: str = ""


class MemoryCommitted(EventData):
    """Entries became permanent (or were rejected) — emitted by the memory service."""

    event_name = "memory.committed"

    entry_ids: tuple[str, ...]
    status: Literal["committed", "rejected"]
    reviewer: str
    reason: str = ""
    """Why, when the memory service itself refused entries (``duplicate of …``)."""
