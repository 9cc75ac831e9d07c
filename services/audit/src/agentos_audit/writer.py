"""Writing one batch of consecutive stream sequences: chain rows, Merkle tree nodes and projection
rows in one transaction, so the chain, the tree, the projection and the projector's position
always agree; and the signed checkpoints of the tree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import asyncpg
from agentos_kernel.db import Connection

from agentos_audit.canonical import GENESIS, chain_step
from agentos_audit.derive import COLUMNS, Rejection, Row
from agentos_audit.merkle import leaf_hash
from agentos_audit.schema import Head, Partitions
from agentos_audit.tree import write_nodes

CHAIN_COLUMNS = ("seq", "kind", "event_id", "code", "reason", "raw", "hash")
Sign = Callable[[int, bytes], str]
"""(tree size, root hash) -> the signed checkpoint note."""


class Item(NamedTuple):
    """One stream sequence to append: its canonical bytes and what they project to.

    ``outcome`` is None when the sequence is missing from the stream (expired by retention).
    """

    seq: int
    raw: bytes
    outcome: Row | Rejection | None


class HeadMoved(RuntimeError):
    """Another writer extended the chain since this one read its head."""


def checkpoint_due(old_seq: int, new_seq: int, every: int) -> bool:
    """True when the chain crossed a multiple of ``every`` between the two sequences."""
    return new_seq // every > old_seq // every


def chain_records(
    start: Head,
    items: Sequence[Item],
    duplicates: set[str],
) -> tuple[list[tuple[object, ...]], list[Row], Head]:
    """The chain rows and projection rows of ``items`` appended after ``start``, and the new head.

    ``duplicates`` holds event ids already projected; it is extended with this batch's ids.
    """
    chain: list[tuple[object, ...]] = []
    rows: list[Row] = []
    prev = start.hash
    for item in items:
        prev = chain_step(prev, item.raw)
        outcome = item.outcome
        if outcome is None:
            chain.append((item.seq, "missing", None, None, "not in the stream", item.raw, prev))
        elif isinstance(outcome, Rejection):
            chain.append((item.seq, "rejected", None, outcome.code, outcome.reason, item.raw, prev))
        elif outcome.id in duplicates:
            chain.append((item.seq, "duplicate", outcome.id, None, None, item.raw, prev))
        else:
            duplicates.add(outcome.id)
            chain.append((item.seq, "event", outcome.id, None, None, item.raw, prev))
            rows.append(outcome)
    return chain, rows, Head(items[-1].seq if items else start.seq, prev, start.tree)


async def write_batch(
    conn: Connection,
    schema: str,
    start: Head,
    items: Sequence[Item],
    partitions: Partitions,
    *,
    sign: Sign | None = None,
    every: int = 1000,
    check_head: bool = True,
) -> Head:
    """Append ``items`` (consecutive sequences right after ``start``) in one transaction."""
    if not items:
        return start
    if items[0].seq != start.seq + 1 or items[-1].seq - items[0].seq != len(items) - 1:
        raise ValueError(f"batch {items[0].seq}..{items[-1].seq} does not follow the chain head {start.seq}")
    await partitions.ensure(conn, [i.outcome.time for i in items if isinstance(i.outcome, Row)])
    async with conn.transaction():
        ids = [i.outcome.id for i in items if isinstance(i.outcome, Row)]
        found = await conn.fetchrow(
            f"SELECT h.seq, h.hash, ARRAY(SELECT event_id FROM {schema}.chain WHERE kind = 'event' "
            "AND event_id = ANY($1::text[])) AS known FROM (SELECT 1) AS one "
            f"LEFT JOIN (SELECT seq, hash FROM {schema}.chain ORDER BY seq DESC LIMIT 1) AS h ON true",
            ids,
        )
        assert found is not None  # (SELECT 1) LEFT JOIN …: always one row
        if check_head:
            current = None if found["seq"] is None else (found["seq"], bytes(found["hash"]))
            if current != start[:2] and not (current is None and start.hash == GENESIS):
                raise HeadMoved(f"chain head is {current and current[0]}, expected {start.seq}")
        chain, rows, new = chain_records(start, items, set(found["known"]))
        tree, nodes = start.tree.extend(leaf_hash(i.raw) for i in items)
        new = new._replace(tree=tree)
        await conn.copy_records_to_table("chain", schema_name=schema, columns=CHAIN_COLUMNS, records=chain)
        await write_nodes(conn, schema, nodes)
        if rows:
            await conn.copy_records_to_table("events", schema_name=schema, columns=COLUMNS, records=rows)
        if sign is not None and checkpoint_due(start.seq, new.seq, every):
            await store_checkpoint(conn, schema, new.tree.size, new.tree.root(), sign)
    return new


async def store_checkpoint(conn: Connection | asyncpg.Pool, schema: str, size: int, root: bytes, sign: Sign) -> None:
    """Sign and insert a checkpoint of the tree of ``size`` leaves (one that exists is kept)."""
    await conn.execute(
        f"INSERT INTO {schema}.tree_checkpoints (tree_size, root, note) VALUES ($1, $2, $3) "
        "ON CONFLICT (tree_size) DO NOTHING",
        size,
        root,
        sign(size, root),
    )


async def last_checkpoint(conn: Connection | asyncpg.Pool, schema: str) -> int:
    """The tree size of the newest checkpoint (0 if none)."""
    return int(await conn.fetchval(f"SELECT coalesce(max(tree_size), 0) FROM {schema}.tree_checkpoints"))


__all__ = [
    "CHAIN_COLUMNS",
    "HeadMoved",
    "Item",
    "Sign",
    "chain_records",
    "checkpoint_due",
    "last_checkpoint",
    "store_checkpoint",
    "write_batch",
]
