"""The Merkle tree in Postgres (``<schema>.tree``, see :mod:`agentos_audit.merkle`): appending
nodes, reading the few a proof needs, and putting a tree in place for a chain that has none."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeAlias

import asyncpg
from agentos_kernel.db import Connection

from agentos_audit import merkle
from agentos_audit import schema as sch

TREE_COLUMNS = ("level", "idx", "hash")
_BACKFILL_BATCH = 10_000
_NODES = (
    "SELECT t.level, t.idx, t.hash FROM unnest($1::smallint[], $2::bigint[]) AS q(level, idx) "
    "JOIN {s}.tree t ON t.level = q.level AND t.idx = q.idx"
)
Conn: TypeAlias = "Connection | asyncpg.Pool"


class MissingNodes(LookupError):
    """The tree lacks nodes a proof or the frontier needs (it was edited, or is being built)."""


async def tree_size(conn: Conn, schema: str) -> int:
    """How many leaves the stored tree has."""
    return int(await conn.fetchval(f"SELECT coalesce(max(idx) + 1, 0) FROM {schema}.tree WHERE level = 0"))


async def tree_base(conn: Conn, schema: str) -> int | None:
    """The stream sequence of leaf 0 (None before the first leaf)."""
    value = await conn.fetchval(f"SELECT value FROM {schema}.meta WHERE key = 'tree_base'")
    return None if value is None else int(value)


async def fetch_nodes(conn: Conn, schema: str, nodes: Iterable[merkle.Node]) -> dict[merkle.Node, bytes]:
    """The stored hashes of ``nodes`` (one round trip); :class:`MissingNodes` if any is absent."""
    wanted = sorted(set(nodes))
    rows = await conn.fetch(_NODES.format(s=schema), [n[0] for n in wanted], [n[1] for n in wanted])
    found = {(r["level"], r["idx"]): bytes(r["hash"]) for r in rows}
    if len(found) != len(wanted):
        raise MissingNodes(f"the tree lacks nodes {sorted(set(wanted) - set(found))[:5]}")
    return found


async def load_frontier(conn: Conn, schema: str, size: int) -> merkle.Frontier:
    """The frontier of the stored tree's first ``size`` leaves."""
    ids = merkle.frontier_nodes(size)
    nodes = await fetch_nodes(conn, schema, ids) if ids else {}
    return merkle.Frontier(size, tuple(nodes[n] for n in ids))


async def root_at(conn: Conn, schema: str, size: int) -> bytes:
    """The root of the stored tree's first ``size`` leaves."""
    return (await load_frontier(conn, schema, size)).root()


async def hashes_of(conn: Conn, schema: str, ranges: Sequence[merkle.Range]) -> list[bytes]:
    """The hash of each range, from one read of the nodes they need."""
    nodes = await fetch_nodes(conn, schema, merkle.needed(ranges))
    return [merkle.hash_range(nodes, a, b) for a, b in ranges]


async def inclusion_path(conn: Conn, schema: str, index: int, size: int) -> list[bytes]:
    """RFC 9162 PATH(index, D[0:size]) from the stored tree."""
    return await hashes_of(conn, schema, merkle.inclusion_ranges(index, size))


async def consistency_path(conn: Conn, schema: str, old: int, size: int) -> list[bytes]:
    """RFC 9162 PROOF(old, D[0:size]) from the stored tree."""
    return await hashes_of(conn, schema, merkle.consistency_ranges(old, size))


async def write_nodes(conn: Connection, schema: str, rows: list[tuple[int, int, bytes]]) -> None:
    """Append new complete nodes."""
    if rows:
        await conn.copy_records_to_table("tree", schema_name=schema, columns=TREE_COLUMNS, records=rows)


async def start_head(conn: Connection, schema: str, first_seq: int) -> sch.Head:
    """Where the chain continues (:func:`schema.start_head`), with its tree: the stored one, or
    one built now from the chain's rows (a projection made before the tree existed)."""
    found = await sch.start_head(conn, schema, first_seq)
    base = await tree_base(conn, schema)
    if base is None:
        lo = await conn.fetchval(f"SELECT min(seq) FROM {schema}.chain")
        base = int(lo) if lo is not None else found.seq + 1
        await sch.write_meta(conn, schema, {"tree_base": str(base)})
    size = min(await tree_size(conn, schema), max(0, found.seq - base + 1))
    # Nodes past the chain's end (its tail was deleted): the projector appends them again from the log.
    await conn.execute(f"DELETE FROM {schema}.tree WHERE ((idx + 1) << level) > $1", size)
    frontier = await load_frontier(conn, schema, size)
    while base + frontier.size - 1 < found.seq:
        rows = await conn.fetch(
            f"SELECT raw FROM {schema}.chain WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT {_BACKFILL_BATCH}",
            base + frontier.size,
            found.seq,
        )
        if not rows:
            break
        async with conn.transaction():
            frontier, nodes = frontier.extend(merkle.leaf_hash(bytes(r["raw"])) for r in rows)
            await write_nodes(conn, schema, nodes)
    return found._replace(tree=frontier)


__all__ = [
    "TREE_COLUMNS",
    "MissingNodes",
    "consistency_path",
    "fetch_nodes",
    "hashes_of",
    "inclusion_path",
    "load_frontier",
    "root_at",
    "start_head",
    "tree_base",
    "tree_size",
    "write_nodes",
]
