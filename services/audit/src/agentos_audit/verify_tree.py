"""``verify``'s checks of the Merkle tree and of every signed checkpoint of it: those Postgres
holds, those published into the log (``audit.checkpoint`` events) and those on the witness.

The tree is recomputed twice during verify's walk, from the log's messages and from the chain's
stored bytes; the stored tree nodes are held against the latter, and each checkpoint against
both at its size. A checkpoint is *valid* when the trusted key signed it and its root is the
log's tree at its size; a checkpoint in the log or on the witness must also be in Postgres, and
one that covers more entries than the chain holds means rows were deleted at the chain's tail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nats.js.client import JetStreamContext

from agentos_audit.logread import read_log
from agentos_audit.merkle import Frontier, leaf_hash
from agentos_audit.publish import CHECKPOINT_TYPE, read_witness
from agentos_audit.signing import open_note

Add = Callable[[str, int | None, str, str], None]


@dataclass
class Claim:
    """One copy of a checkpoint: where it is (``postgres``, ``log``, ``witness``), the tree size it
    says it is of, its note, its place there (log seq, witness line), and Postgres's root column."""

    where: str
    size: int | None
    note: str
    at: int | None = None
    root: bytes | None = None

    def label(self) -> str:
        if self.where == "log":
            return f"checkpoint in the log at seq {self.at}"
        if self.where == "witness":
            return f"checkpoint on witness line {self.at}"
        return "checkpoint in Postgres"


async def log_claims(js: JetStreamContext, last: int, schema: str) -> list[Claim]:
    """The ``audit.checkpoint`` events of the log (its checkpoint subject only) of the projection
    ``schema`` (one whose data cannot be read counts, as a forgery)."""
    out: list[Claim] = []
    async for batch in read_log(js, 1, last, subject="agentos.*.audit.checkpoint"):
        for stored in batch:
            try:
                event: Any = msgspec.json.decode(stored.body)
                data = event["data"]
                if event.get("type") == CHECKPOINT_TYPE and data["projection"] == schema:
                    out.append(Claim("log", int(data["tree_size"]), str(data["note"]), stored.seq))
            except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
                out.append(Claim("log", None, "", stored.seq))
    return out


def witness_claims(path: Path | None) -> list[Claim]:
    """The checkpoints on a witness file (none when there is no file)."""
    if path is None or not path.exists():
        return []
    return [
        Claim("witness", size if isinstance(size, int) else None, note, line) for line, size, note in read_witness(path)
    ]


class TreeCheck:
    """The two recomputed trees, and the judgement of the checkpoints against them."""

    def __init__(self, public: Ed25519PublicKey | None, base: int, claims: list[Claim]) -> None:
        self.public, self.base, self.claims = public, base, claims
        self.log, self.pg = Frontier(), Frontier()
        self.sizes = {c.size for c in claims if c.size is not None}
        self.roots: dict[int, tuple[bytes, bytes]] = {}
        self.valid = 0
        self.vouched: list[int] = []
        """Sizes of valid checkpoints whose root is the chain's tree but not the log's."""

    def leaf(self, log_raw: bytes, pg_raw: bytes | None) -> list[tuple[int, int, bytes]]:
        """Append one sequence to both trees; returns the chain tree's new nodes."""
        self.log, _ = self.log.extend([leaf_hash(log_raw)])
        self.pg, rows = self.pg.extend([leaf_hash(log_raw if pg_raw is None else pg_raw)])
        if self.pg.size in self.sizes:
            self.roots[self.pg.size] = (self.log.root(), self.pg.root())
        return rows

    def judge(self, add: Add) -> None:
        """Check every claim (after the walk); records divergences through ``add``."""
        if self.public is None:
            return
        held = {c.size: c.note for c in self.claims if c.where == "postgres"}
        for c in self.claims:
            if self._one(c, held, add):
                self.valid += 1

    def _one(self, c: Claim, held: dict[int | None, str], add: Add) -> bool:
        assert self.public is not None
        note = open_note(self.public, c.note)
        if note is None or note.size != c.size or (c.root is not None and c.root != note.root):
            last = self.base + (c.size or 1) - 1
            add(
                "forged_checkpoint",
                last,
                c.where,
                f"the {c.label()} (tree size {c.size}) is not validly signed by the trusted key",
            )
            return False
        if not self._agrees(c, note.size, note.root, add):
            return False
        if c.where != "postgres" and held.get(note.size) != c.note:
            at = c.at if c.where == "log" else self.base + note.size - 1
            add("deleted", at, "checkpoints", f"the {c.label()} (tree size {note.size}) is missing from Postgres")
        return True

    def _agrees(self, c: Claim, size: int, root: bytes, add: Add) -> bool:
        """Whether a validly signed checkpoint's tree is the log's (and the chain reaches it)."""
        last, end = self.base + size - 1, self.base + self.pg.size - 1
        if size > self.pg.size:
            add(
                "deleted",
                end + 1,
                "chain",
                f"the {c.label()} covers {size} entries (up to seq {last}), but the "
                f"chain ends at seq {end}: rows from seq {end + 1} on were deleted",
            )
            return False
        if size not in self.roots:
            return False  # the walk stopped before it (the divergence limit)
        log_root, pg_root = self.roots[size]
        if root == log_root:
            return True
        if root == pg_root:
            self.vouched.append(size)
            add(
                "modified",
                last,
                "stream",
                f"the log's tree of {size} entries is not the one the {c.label()} "
                "signs, which the chain matches: the stream was changed",
            )
        else:
            add(
                "forged_checkpoint",
                last,
                c.where,
                f"the {c.label()} is validly signed but its root is not the log's tree of {size} entries",
            )
        return False


async def stored_nodes(conn: Any, schema: str) -> AsyncIterator[tuple[int, int, bytes]]:
    """The stored tree's nodes in the order an append makes them (by the leaf completing each)."""
    sql = f"SELECT level, idx, hash FROM {schema}.tree ORDER BY ((idx + 1) << level), level"
    async for r in conn.cursor(sql, prefetch=2000):
        yield r["level"], r["idx"], bytes(r["hash"])


__all__ = ["Claim", "TreeCheck", "log_claims", "stored_nodes", "witness_claims"]
