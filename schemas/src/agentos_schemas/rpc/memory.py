"""Request/reply contracts of the memory service: search."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MEMORY_SEARCH = "agentosrpc.memory.search"

MemoryKind = Literal["working", "episodic", "semantic"]


class MemoryEntry(BaseModel):
    """One memory with its provenance."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    id: str
    kind: MemoryKind
    content: str
    tags: tuple[str, ...] = ()
    score: float = 0.0
    """Relevance to the query (higher is better)."""
    agent: str | None = None
    """The agent whose work produced it (None for curated semantic memory)."""
    goal_id: str | None = None
    task_id: str | None = None
    event_id: str | None = None
    """The event that proposed it."""
    source: str | None = None
    """For curated entries: the file it was loaded from."""
    created_at: dt.datetime | None = None


class MemorySearch(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    tenant: str
    query: str = Field(max_length=4000)
    kinds: tuple[MemoryKind, ...] = ("working", "episodic", "semantic")
    goal_id: str | None = None
    """Working memory is searched only within this goal; other goals' working memory never leaks in."""
    k: int = Field(default=5, ge=0, le=50)


class MemorySearchResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    entries: tuple[MemoryEntry, ...] = ()
    error: str | None = None
