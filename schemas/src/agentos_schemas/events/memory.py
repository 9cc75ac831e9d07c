"""Memory: proposals, reviews and commits. Nothing an agent writes is permanent until reviewed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentos_schemas.events._base import EventData


class MemoryProposed(EventData):
    event_name = "memory.proposed"

    entry_id: str
    """Derived from the proposing task and content, so a retried proposal is the same entry."""
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
