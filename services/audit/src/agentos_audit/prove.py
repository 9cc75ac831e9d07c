"""``agentos audit prove``: inclusion and consistency proofs from the stored tree, as the JSON
documents ``python -m agentos_verify`` checks; and ``agentos audit checkpoint``, a checkpoint on
demand. A proof reads the event's chain row, one checkpoint and the O(log n) tree nodes its path
needs, in one snapshot.
"""

from __future__ import annotations

import base64

import asyncpg
from agentos_kernel import Bus
from agentos_kernel.db import Connection
from agentos_kernel.exceptions import InvalidInput, Unavailable

from agentos_audit import tree
from agentos_audit.publish import Publisher
from agentos_audit.schema import check_schema
from agentos_audit.signing import Signer
from agentos_audit.writer import store_checkpoint

PROOF_FORMAT = "agentos-audit-proof/v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _checkpoint(conn: Connection, schema: str, size: int | None) -> tuple[int, str]:
    """(tree size, note) of the checkpoint of ``size`` leaves, or of the latest one."""
    if size is None:
        row = await conn.fetchrow(
            f"SELECT tree_size, note FROM {schema}.tree_checkpoints ORDER BY tree_size DESC LIMIT 1"
        )
        if row is None:
            raise Unavailable(
                f"the audit log {schema} has no signed checkpoint yet (`agentos audit checkpoint` signs one)"
            )
    else:
        row = await conn.fetchrow(f"SELECT tree_size, note FROM {schema}.tree_checkpoints WHERE tree_size = $1", size)
        if row is None:
            raise InvalidInput(f"the audit log {schema} has no checkpoint of tree size {size}")
    return int(row["tree_size"]), str(row["note"])


async def inclusion_proof(pool: asyncpg.Pool, schema: str, event_id: str, size: int | None = None) -> dict[str, object]:
    """The proof that event ``event_id`` is in the checkpoint of ``size`` leaves (default: the latest)."""
    s = check_schema(schema)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(f"SELECT seq, raw FROM {s}.chain WHERE kind = 'event' AND event_id = $1", event_id)
        if row is None:
            raise InvalidInput(f"no event {event_id!r} in the audit log {s}")
        base = await tree.tree_base(conn, s) or 1
        size, note = await _checkpoint(conn, s, size)
        index = int(row["seq"]) - base
        if index >= size:
            raise InvalidInput(
                f"event {event_id} (stream seq {row['seq']}) is newer than the checkpoint of tree size {size}: "
                "name a later one, or sign one with `agentos audit checkpoint`"
            )
        path = await tree.inclusion_path(conn, s, index, size)
    return {
        "format": PROOF_FORMAT,
        "kind": "inclusion",
        "event_id": event_id,
        "seq": int(row["seq"]),
        "leaf_index": index,
        "tree_size": size,
        "entry": _b64(bytes(row["raw"])),
        "path": [_b64(h) for h in path],
        "checkpoint": note,
    }


async def consistency_proof(pool: asyncpg.Pool, schema: str, old: int, new: int) -> dict[str, object]:
    """The proof that the checkpoint of ``old`` leaves is a prefix of the one of ``new`` leaves."""
    s = check_schema(schema)
    if not 0 < old <= new:
        raise InvalidInput(f"a consistency proof is from an older checkpoint to a newer one (got {old} -> {new})")
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        a, b = await _checkpoint(conn, s, old), await _checkpoint(conn, s, new)
        path = await tree.consistency_path(conn, s, old, new) if old < new else []
    return {
        "format": PROOF_FORMAT,
        "kind": "consistency",
        "old": {"tree_size": a[0], "checkpoint": a[1]},
        "new": {"tree_size": b[0], "checkpoint": b[1]},
        "path": [_b64(h) for h in path],
    }


async def checkpoint_now(bus: Bus, pool: asyncpg.Pool, schema: str, signer: Signer, publisher: Publisher) -> str:
    """Sign the tree as it stands (if its size has no checkpoint yet), publish it; returns its note."""
    s = check_schema(schema)
    async with pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read"):
            size = await tree.tree_size(conn, s)
            if size == 0:
                raise Unavailable(f"the audit log {s} is empty: nothing to sign")
            root = await tree.root_at(conn, s, size)
            await store_checkpoint(conn, s, size, root, lambda n, r: signer.note(publisher.origin, n, r))
        await publisher.flush(conn)
        return str(await conn.fetchval(f"SELECT note FROM {s}.tree_checkpoints WHERE tree_size = $1", size))


__all__ = ["PROOF_FORMAT", "checkpoint_now", "consistency_proof", "inclusion_proof"]
