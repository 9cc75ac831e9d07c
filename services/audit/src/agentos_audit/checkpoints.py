"""When the projector signs a checkpoint of its tree, and what it does with it.

A checkpoint is signed in the transaction of the batch that crosses a multiple of ``every``
sequences, after ``idle_s`` without new messages, and at least every ``interval_s`` while the log
grows; then published (:mod:`agentos_audit.publish`). The log's own ``audit.checkpoint`` events do
not count as growth: a checkpoint of only them would publish another one, forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import asyncpg
from agentos_kernel.db import Connection

from agentos_audit.derive import Row
from agentos_audit.publish import CHECKPOINT_TYPE, Publisher
from agentos_audit.schema import Head
from agentos_audit.signing import Signer
from agentos_audit.tree import tree_base
from agentos_audit.writer import Item, checkpoint_due, last_checkpoint, store_checkpoint

log = logging.getLogger("agentos.audit")


def _counts(item: Item) -> bool:
    return not (isinstance(item.outcome, Row) and item.outcome.type == CHECKPOINT_TYPE)


class Checkpointer:
    """The projector's checkpoint schedule, signer and publisher."""

    def __init__(self, signer: Signer, publisher: Publisher, *, every: int, idle_s: float, interval_s: float) -> None:
        self.signer, self.publisher, self.origin = signer, publisher, publisher.origin
        self.every, self.idle_s, self.interval_s = every, idle_s, interval_s
        self.signed_size = 0
        self.unsigned = 0
        """Entries since the last checkpoint, other than the log's own checkpoint events."""
        self.signed_at = time.monotonic()

    def sign(self, size: int, root: bytes) -> str:
        """The signed note of a tree (the writer's ``sign``)."""
        return self.signer.note(self.origin, size, root)

    async def start(self, conn: Connection | asyncpg.Pool, schema: str, head: Head) -> None:
        """Resume the schedule of ``schema``: the last checkpoint's size, and the entries after it
        other than checkpoint events (counted as :meth:`wrote` counts them, so a restart after a
        tail of only checkpoint events does not sign a checkpoint of them)."""
        self.signed_size = await last_checkpoint(conn, schema)
        after = (await tree_base(conn, schema) or 1) + self.signed_size
        own = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.events WHERE seq >= $1 AND type = $2", after, CHECKPOINT_TYPE
        )
        self.unsigned = max(0, head.tree.size - self.signed_size - int(own))
        self.signed_at = time.monotonic()

    def wrote(self, old_seq: int, head: Head, items: Sequence[Item], *, signed: bool = True) -> None:
        """Count a batch written after ``old_seq`` (``signed``: its transaction signed one if due)."""
        self.unsigned += sum(map(_counts, items))
        if signed and checkpoint_due(old_seq, head.seq, self.every):
            self.signed_size, self.unsigned, self.signed_at = head.tree.size, 0, time.monotonic()

    def due(self, head: Head, idle_s: float | None) -> bool:
        """Whether to sign the head now: after ``idle_s`` quiet seconds, or the interval (None: busy)."""
        if self.unsigned <= 0 or head.tree.size <= self.signed_size:
            return False
        waited = time.monotonic() - self.signed_at
        return waited >= self.interval_s or (idle_s is not None and idle_s > self.idle_s)

    async def sign_head(self, conn: Connection | asyncpg.Pool, schema: str, head: Head) -> None:
        """Sign a checkpoint of the tree at ``head`` (if it has grown) and publish what is unpublished."""
        if head.tree.size > self.signed_size and self.unsigned > 0:
            await store_checkpoint(conn, schema, head.tree.size, head.tree.root(), self.sign)
            self.signed_size, self.unsigned, self.signed_at = head.tree.size, 0, time.monotonic()
            log.info("audit: checkpoint signed at tree size %d (stream seq %d)", head.tree.size, head.seq)
        await self.publisher.flush(conn)


__all__ = ["Checkpointer"]
