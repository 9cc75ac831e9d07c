"""The memory service: stores proposals, applies reviews, keeps working memory, answers searches.

Consumes (durable consumer ``memory``):

- ``memory.proposed`` — an agent proposes an entry; stored as ``proposed`` with its provenance.
- ``task.reviewed`` — the QA verdict on a task attempt commits (accepted) or rejects its proposals;
  a rejection also rejects the task's working memory.
- ``memory.reviewed`` — a human's verdict on proposals by id.
- ``task.completed`` — the task's output becomes committed working memory of its goal.

Publishes ``memory.committed`` after each review that changed entries. Answers
``agentosrpc.memory.search`` (see :mod:`agentos_memory.search`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from agentos_kernel import ConfigError
from agentos_kernel.bus import Bus
from agentos_kernel.db import Connection, first_time
from agentos_kernel.service import ServiceContext, run_service
from agentos_kernel.settings import KernelSettings
from agentos_schemas import Event, derived_event_id
from agentos_schemas.events import (
    MemoryCommitted,
    MemoryProposed,
    MemoryReviewed,
    TaskCompleted,
    TaskReviewed,
)
from agentos_schemas.rpc import MEMORY_SEARCH, MemorySearch, MemorySearchResult

from agentos_memory import knowledge, logic, store
from agentos_memory.search import answer
from agentos_memory.settings import MemorySettings

NAME = "memory"
DURABLE = "memory"
FILTERS = [
    "agentos.*.memory.proposed",
    "agentos.*.memory.reviewed",
    "agentos.*.task.completed",
    "agentos.*.task.reviewed",
]

log = logging.getLogger("agentos.memory")
Handler = Callable[[Event[Any]], Awaitable[None]]


async def _first_time(conn: Connection, event_id: str) -> bool:
    """:func:`agentos_kernel.db.first_time` for this service's consumer."""
    return await first_time(conn, store.SCHEMA, DURABLE, event_id)


class MemoryService:
    """The event handlers. Each records the event in ``memory.processed_events`` in the same
    transaction as its writes, so a redelivered event changes nothing."""

    def __init__(self, pool: asyncpg.Pool, bus: Bus, similarity: float = 0.9) -> None:
        self.pool = pool
        self.bus = bus
        self.similarity = similarity
        self.handlers: dict[str, Handler] = {
            MemoryProposed.ce_type(): self.on_proposed,
            MemoryReviewed.ce_type(): self.on_memory_reviewed,
            TaskCompleted.ce_type(): self.on_task_completed,
            TaskReviewed.ce_type(): self.on_task_reviewed,
        }

    async def handle(self, event: Event[Any]) -> None:
        """Dispatch one event to its handler by CloudEvent type."""
        await self.handlers[event.type](event)

    async def on_proposed(self, event: Event[MemoryProposed]) -> None:
        """Store a proposal; if its task was already reviewed, apply that verdict at once. A
        proposal that duplicates a committed entry is kept refused, with the reason announced."""
        row = logic.proposal_row(event.id, event.tenant, event.data, event.time)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await _first_time(conn, event.id):
                return
            await store.lock_task(conn, event.tenant, row.task_id or "")
            twin = logic.duplicate(row.content, await store.committed_twins(conn, row), self.similarity)
            if twin is not None:
                if await store.propose_entry(conn, logic.refused_duplicate(row, *twin)):
                    await self._refused(event, [row.id], twin[1])
                return
            review = await store.task_review(conn, event.tenant, row.task_id or "")
            row = logic.after_review(row, review)
            if await store.propose_entry(conn, row) and review is not None:
                await self._announce(event, [row.id], review)

    async def on_task_reviewed(self, event: Event[TaskReviewed]) -> None:
        """The QA verdict on one task attempt: commit or reject what it proposed (an accepted
        proposal that duplicates an entry committed since it was proposed is refused instead)."""
        data, review = event.data, logic.task_review(event.data)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await _first_time(conn, event.id):
                return
            await store.lock_task(conn, event.tenant, data.task_id)
            await store.record_task_review(conn, event.tenant, data.task_id, review, event.id)
            if review.status == "committed":
                await self._refuse_duplicates(conn, event, data.task_id)
            changed = await store.review_task_entries(conn, event.tenant, data.task_id, review)
            await self._announce(event, changed, review)

    async def _refuse_duplicates(self, conn: Connection, event: Event[Any], task_id: str) -> None:
        for row in await store.proposed_entries(conn, event.tenant, task_id):
            twin = logic.duplicate(row.content, await store.committed_twins(conn, row), self.similarity)
            if twin is not None:
                await store.refuse_entry(conn, event.tenant, row.id, *twin)
                await self._refused(event, [row.id], twin[1], key=row.id)

    async def _refused(self, cause: Event[Any], ids: Sequence[str], reason: str, key: str = "") -> None:
        data = MemoryCommitted(entry_ids=tuple(ids), status="rejected", reviewer=logic.DEDUP_REVIEWER, reason=reason)
        await self.bus.publish(self.bus.new(data, cause=cause, id=derived_event_id(cause.id, "memory-refused", key)))
        log.info("memory: %s refused: %s", ", ".join(ids), reason)

    async def on_memory_reviewed(self, event: Event[MemoryReviewed]) -> None:
        """A human's verdict on proposals by id (only entries still ``proposed`` change)."""
        data = event.data
        review = logic.Review(logic.status_for(data.verdict), data.reviewer)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await _first_time(conn, event.id):
                return
            changed = await store.review_entries(conn, event.tenant, data.entry_ids, review)
            await self._announce(event, changed, review)

    async def on_task_completed(self, event: Event[TaskCompleted]) -> None:
        """Keep a summary of the task's output as committed working memory of its goal."""
        row = logic.working_row(event.id, event.tenant, event.data, event.time)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await _first_time(conn, event.id):
                return
            await store.lock_task(conn, event.tenant, event.data.task_id)
            review = await store.task_review(conn, event.tenant, event.data.task_id)
            await store.insert_entry(conn, logic.after_review(row, review))

    async def _announce(self, cause: Event[Any], ids: Sequence[str], review: logic.Review) -> None:
        # Published inside the handler's transaction: if the publish fails nothing commits and the
        # event is redelivered; the derived id makes a repeated publish one stored event.
        if not ids:
            return
        data = MemoryCommitted(entry_ids=tuple(ids), status=review.status, reviewer=review.reviewer)
        event_id = derived_event_id(cause.id, "memory-committed")
        await self.bus.publish(self.bus.new(data, cause=cause, id=event_id))
        log.info("memory: %d entries %s by %s", len(ids), review.status, review.reviewer)


async def setup(ctx: ServiceContext) -> None:
    """Migrate, load the curated files, start the consumer and the search responder."""
    if ctx.pool is None:
        raise ConfigError("the memory service needs a database: start it with database=True")
    pool = ctx.pool
    await store.migrate_schema(pool)
    await knowledge.load(pool, MemorySettings().knowledge_dir)
    service = MemoryService(pool, ctx.bus, MemorySettings().duplicate_similarity)
    await ctx.consume(DURABLE, FILTERS, service.handle, types=set(service.handlers))

    async def search(request: MemorySearch) -> MemorySearchResult:
        return await answer(pool, request)

    sub = await ctx.bus.serve(
        MEMORY_SEARCH, MemorySearch, search, queue=NAME, error_reply=lambda message: MemorySearchResult(error=message)
    )
    ctx.closers.append(sub.unsubscribe)


async def main(settings: KernelSettings) -> None:
    """Run the memory service until SIGTERM/SIGINT."""
    await run_service(NAME, setup, settings, database=True)


__all__ = ["DURABLE", "FILTERS", "NAME", "MemoryService", "main", "setup"]
