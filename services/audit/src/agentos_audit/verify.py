"""``agentos audit verify``: recompute the chain and the Merkle tree from the JetStream log and
from Postgres, check every projection row and tree node against the log, check every signed
checkpoint (in Postgres, in the log, on the witness), and name the first divergence.

One pass in stream order over four inputs: the log (an ack-less reader), the chain joined with
``events`` on ``seq`` and the stored tree (one Postgres snapshot); then the checkpoints
(:mod:`agentos_audit.verify_tree`). Divergence kinds:

- ``modified`` — stored bytes, a chain field (its kind, a relabelled status included), a tree node
  or a projection column differ from the log (``where`` ``stream``: the log itself differs from
  what a valid checkpoint signed and the chain still holds);
- ``deleted`` — the log has a sequence (or event) the chain (or projection) lacks, a checkpoint
  covers entries past the chain's end (rows deleted at the tail), a checkpoint of the log or the
  witness is missing from Postgres, or (``where`` ``stream``) the log lost a message a valid
  checkpoint vouches for;
- ``inserted`` — Postgres holds a row the log does not back;
- ``reordered`` — a row is present but at another sequence than the log's;
- ``broken_chain`` — a chain hash is not ``sha256(previous hash || stored bytes)``;
- ``forged_checkpoint`` — a checkpoint is not validly signed by the trusted key, its columns are
  not what it signs, or a validly signed one's root is not the log's tree at its size;
- ``stale`` — only when the projection was made by another projector version than this code's
  (``meta``): the stored bytes are intact but today's code projects them differently; run
  ``agentos audit rebuild``. With the same version, any such difference is ``modified``;
- ``other_stream`` — the projection is of another (recreated) stream;
- ``behind`` — with a ``max_behind`` bound: the projection ends further behind the log's last
  sequence when verify started than the bound allows, after waiting ``wait_s`` for it to catch up
  (the projection is stalled, or its service is not running). The report says up to which
  sequence it verified (``head_seq``) and where the log ended (``log_last_seq``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from agentos_kernel import Bus
from agentos_kernel.db import Connection
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agentos_audit import signing
from agentos_audit.canonical import GENESIS, canonical_bytes, chain_step, split_canonical
from agentos_audit.derive import COLUMNS, PROJECTOR_VERSION, Rejection, Row, comparable
from agentos_audit.items import derive_item
from agentos_audit.logread import Stored, read_log, stream_bounds
from agentos_audit.schema import check_schema, read_meta
from agentos_audit.verify_tree import Claim, TreeCheck, log_claims, stored_nodes, witness_claims

_ROWS = """SELECT c.seq AS c_seq, c.kind, c.event_id, c.code, c.raw, c.hash, {cols}, e.data::text AS data
FROM {s}.chain c FULL JOIN {s}.events e ON e.seq = c.seq ORDER BY coalesce(c.seq, e.seq), e.id"""


@dataclass
class Divergence:
    """One disagreement between the log, the chain, the projection and the checkpoints."""

    kind: str
    seq: int | None
    where: str
    detail: str


@dataclass
class Report:
    """What ``verify`` found; ``first`` is the divergence with the lowest sequence."""

    schema: str
    head_seq: int = 0
    chain_rows: int = 0
    events_checked: int = 0
    log_ahead: int = 0
    log_last_seq: int = 0
    """The log's last sequence when verify started."""
    checkpoints: int = 0
    checkpoints_valid: int = 0
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing diverges."""
        return not self.divergences

    @property
    def first(self) -> Divergence | None:
        """The divergence with the lowest sequence (None when all agree)."""
        ordered = sorted(self.divergences, key=lambda d: (d.seq is None, d.seq or 0))
        return ordered[0] if ordered else None


async def _flat(batches: AsyncIterator[list[Stored]]) -> AsyncIterator[Stored]:
    async for batch in batches:
        for stored in batch:
            yield stored


class Verifier:
    """One verification run (see the module docs)."""

    def __init__(
        self,
        bus: Bus,
        pool: asyncpg.Pool,
        schema: str,
        public: Ed25519PublicKey | None,
        limit: int = 20,
        max_behind: int | None = None,
        wait_s: float = 0.0,
        witness: Path | None = None,
    ) -> None:
        self.bus, self.pool, self.s, self.public, self.limit = bus, pool, check_schema(schema), public, limit
        self.max_behind, self.wait_s, self.witness = max_behind, wait_s, witness
        self.report = Report(schema)
        self.log_hash = self.pg_hash = GENESIS
        self.signed: dict[int, bytes] = {}
        self.tree = TreeCheck(None, 1, [])
        self.seen: set[str] = set()
        self.stale_ok = False
        """Whether another projector version made the projection (then a re-derivation may differ)."""
        self._nodes: AsyncIterator[tuple[int, int, bytes]] | None = None

    def add(self, kind: str, seq: int | None, where: str, detail: str) -> None:
        """Record one divergence."""
        self.report.divergences.append(Divergence(kind, seq, where, detail))

    async def run(self) -> Report:
        """Verify everything up to the chain head of one Postgres snapshot."""
        _, self.report.log_last_seq, _ = await stream_bounds(self.bus.js)
        if self.max_behind is not None:
            await self._await_head(self.report.log_last_seq - self.max_behind)
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            meta = await read_meta(conn, self.s)
            _, last, created = await stream_bounds(self.bus.js)
            if meta.get("stream_created", created) != created:
                self.add(
                    "other_stream",
                    None,
                    "stream",
                    f"projection is of the stream created "
                    f"{meta.get('stream_created')}, the log's was created {created}",
                )
                return self.report
            bounds = await conn.fetchrow(f"SELECT min(seq) AS lo, max(seq) AS hi FROM {self.s}.chain")
            assert bounds is not None  # an aggregate without GROUP BY: always one row
            lo, hi = bounds["lo"] or 1, bounds["hi"] or 0
            base = int(meta.get("tree_base", lo))
            self.stale_ok = meta.get("projector_version", PROJECTOR_VERSION) != PROJECTOR_VERSION
            self.report.head_seq, self.report.log_ahead = hi, max(0, last - hi)
            self._behind(hi)
            await self._checkpoints(conn, created, hi)
            self.tree = TreeCheck(self.public, base, await self._claims(conn, last))
            self.log_hash = self.pg_hash = GENESIS
            self._nodes = stored_nodes(conn, self.s).__aiter__()
            await self._walk(conn, min(lo, base), hi)
            await self._duplicates(conn)
            self._judge()
        return self.report

    async def _claims(self, conn: Connection, last: int) -> list[Claim]:
        rows = await conn.fetch(f"SELECT tree_size, root, note FROM {self.s}.tree_checkpoints ORDER BY tree_size")
        held = [Claim("postgres", r["tree_size"], r["note"], None, bytes(r["root"])) for r in rows]
        return [*held, *await log_claims(self.bus.js, last, self.s), *witness_claims(self.witness)]

    def _judge(self) -> None:
        """Judge the checkpoints; a chain row the log lacks, under a valid checkpoint that the chain
        (not the log) matches, is a message the stream lost, not a row Postgres gained."""
        if len(self.report.divergences) >= self.limit:
            return
        self.tree.judge(self.add)
        self.report.checkpoints += len(self.tree.claims)
        self.report.checkpoints_valid += self.tree.valid
        if self.tree.vouched:
            covered = self.tree.base + max(self.tree.vouched) - 1
            for d in self.report.divergences:
                if (d.kind, d.where) == ("inserted", "chain") and d.seq is not None and d.seq <= covered:
                    d.kind, d.where = "deleted", "stream"
                    d.detail = (
                        f"stream seq {d.seq} is gone from the log; a valid checkpoint vouches for the chain's row"
                    )

    async def _await_head(self, target: int) -> None:
        """Give the projection up to ``wait_s`` to reach ``target``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while True:
            head = await self.pool.fetchval(f"SELECT coalesce(max(seq), 0) FROM {self.s}.chain")
            if head >= target or loop.time() >= deadline:
                return
            await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))

    def _behind(self, head: int) -> None:
        last = self.report.log_last_seq
        if self.max_behind is None or last - head <= self.max_behind:
            return
        self.add(
            "behind",
            head + 1,
            "projection",
            f"the projection ends at seq {head}, {last - head} behind the log's last seq {last} when verify "
            f"started (allowed: {self.max_behind}, waited {self.wait_s:g}s): the projection is stalled or "
            "its service is not running; see `agentos status`",
        )

    async def _checkpoints(self, conn: Connection, created: str, head: int) -> None:
        rows = await conn.fetch(f"SELECT seq, hash, key_id, message, signature FROM {self.s}.checkpoints ORDER BY seq")
        self.report.checkpoints = len(rows)
        for r in rows:
            statement = signing.check(self.public, r["message"], r["signature"]) if self.public else None
            if self.public is None:
                continue
            fields_ok = (
                statement is not None
                and statement.get("seq") == r["seq"]
                and statement.get("hash") == bytes(r["hash"]).hex()
                and statement.get("stream_created") == created
            )
            if not fields_ok:
                self.add(
                    "forged_checkpoint",
                    r["seq"],
                    "checkpoint",
                    f"checkpoint at seq {r['seq']} (key {r['key_id']}) is not validly signed by the trusted key",
                )
            elif r["seq"] > head:
                self.add(
                    "deleted",
                    head + 1,
                    "chain",
                    f"a valid checkpoint covers seq {r['seq']}, but the chain ends at {head}",
                )
            else:
                self.report.checkpoints_valid += 1
                self.signed[r["seq"]] = bytes(r["hash"])

    async def _walk(self, conn: Connection, lo: int, hi: int) -> None:
        cols = ", ".join(f"e.{c}" for c in COLUMNS[:-1])
        rows = conn.cursor(_ROWS.format(cols=cols, s=self.s), prefetch=1000).__aiter__()
        log = _flat(read_log(self.bus.js, lo, hi))
        msg: Stored | None = await anext(log, None)
        row: Any = await anext(rows, None)
        while (msg is not None or row is not None) and len(self.report.divergences) < self.limit:
            seq = min(x for x in (msg and msg.seq, row and (row["c_seq"] or row["seq"])) if x is not None)
            group = []
            while row is not None and (row["c_seq"] or row["seq"]) == seq:
                group.append(row)
                row = await anext(rows, None)
            here = msg if msg is not None and msg.seq == seq else None
            if here is not None:
                msg = await anext(log, None)
            await self._check(seq, here, group)

    async def _check(self, seq: int, msg: Stored | None, group: list[Any]) -> None:
        chain = group[0] if group and group[0]["c_seq"] is not None else None
        events = [g for g in group if g["id"] is not None]
        await self._check_chain(seq, msg, chain)
        if chain is None:
            for r in events:
                self.add("inserted", seq, "events", f"event {r['id']} has no chain row (not from the log)")
            return
        await self._check_projection(seq, msg, chain, events)

    async def _check_chain(self, seq: int, msg: Stored | None, chain: Any) -> None:
        log_raw = canonical_bytes(msg.body, msg.headers) if msg is not None else b""
        await self._check_entry(seq, msg, chain, log_raw)
        await self._check_nodes(seq, self.tree.leaf(log_raw, None if chain is None else bytes(chain["raw"])))

    async def _check_entry(self, seq: int, msg: Stored | None, chain: Any, log_raw: bytes) -> None:
        self.log_hash = chain_step(self.log_hash, log_raw)
        signed = self.signed.get(seq)
        if signed is not None and signed != self.log_hash:
            self.add("forged_checkpoint", seq, "checkpoint", f"the signed hash at seq {seq} disagrees with the log")
        if chain is None:
            if msg is not None:
                self.add("deleted", seq, "chain", f"stream seq {seq} has no chain row")
            self.pg_hash = self.log_hash
            return
        raw, stored = bytes(chain["raw"]), bytes(chain["hash"])
        self.report.chain_rows += 1
        if msg is None and chain["kind"] != "missing":
            self.add("inserted", seq, "chain", f"chain row at seq {seq} is not in the log")
        elif raw != log_raw:
            await self._moved_bytes(seq, log_raw)
        if chain_step(self.pg_hash, raw) != stored:
            self.add("broken_chain", seq, "chain", f"hash at seq {seq} is not sha256(previous hash || its bytes)")
        self.pg_hash = stored

    async def _check_nodes(self, seq: int, made: list[tuple[int, int, bytes]]) -> None:
        """Hold the stored tree's next nodes against those the chain's bytes make (until one differs)."""
        if self._nodes is None:
            return
        for level, idx, want in made:
            got = await anext(self._nodes, None)
            if got == (level, idx, want):
                continue
            what = "is missing" if got is None or got[:2] != (level, idx) else "differs from the chain's bytes"
            self.add("modified", seq, "tree", f"tree node (level {level}, index {idx}), complete at seq {seq}, {what}")
            self._nodes = None
            return

    async def _moved_bytes(self, seq: int, log_raw: bytes) -> None:
        other = await self.pool.fetchval(
            f"SELECT seq FROM {self.s}.chain WHERE raw = $1 AND seq <> $2 LIMIT 1", log_raw, seq
        )
        if other is not None:
            self.add("reordered", seq, "chain", f"the log's message at seq {seq} is stored at chain seq {other}")
        else:
            self.add("modified", seq, "chain", f"stored bytes at seq {seq} differ from the log")

    async def _check_projection(self, seq: int, msg: Stored | None, chain: Any, events: list[Any]) -> None:
        raw = bytes(chain["raw"])
        body, headers = split_canonical(raw)
        time = msg.time if msg is not None else (events[0]["time"] if events else None)
        item = await derive_item(self.bus, Stored(seq, body, headers, time, "") if time else None, seq)
        expected = item.outcome
        if not self._kind_agrees(seq, chain, expected) or not isinstance(expected, Row):
            return
        if chain["kind"] != "event":
            for r in events:
                self.add("inserted", seq, "events", f"event {r['id']} at seq {seq}, which is a {chain['kind']} entry")
            return
        self.report.events_checked += 1
        if chain["event_id"] != expected.id:
            self.add("modified", seq, "chain", f"chain event_id at seq {seq} is not the event's id {expected.id}")
        if not events:
            self.add("deleted", seq, "events", f"event {expected.id} (seq {seq}) is missing from the projection")
            return
        for extra in events[1:]:
            self.add("inserted", seq, "events", f"event {extra['id']} is a second row at seq {seq}")
        await self._compare(seq, expected, events[0])

    def _kind_agrees(self, seq: int, chain: Any, expected: Row | Rejection | None) -> bool:
        """Whether the chain row's kind is what the log's message makes of it: ``stale`` only for a
        projection of another projector version; a relabelled entry is ``modified``."""
        kind = "missing" if expected is None else "rejected" if isinstance(expected, Rejection) else "event"
        if kind == "event" and isinstance(expected, Row) and expected.id in self.seen:
            kind = "duplicate"
        if isinstance(expected, Row):
            self.seen.add(expected.id)
        if chain["kind"] == kind or (chain["kind"] == "rejected" and chain["code"] == "storage" and kind == "event"):
            return True
        if chain["kind"] == "missing" and kind != "missing":
            return True  # expired from the stream when projected, back now: nothing to hold against it
        if self.stale_ok and "rejected" in (kind, chain["kind"]):
            self.add("stale", seq, "chain", f"seq {seq} is a {chain['kind']} entry but projects as {kind} today")
        else:
            self.add("modified", seq, "chain", f"seq {seq} is marked {chain['kind']}, but the log's message is {kind}")
        return False

    async def _compare(self, seq: int, expected: Row, actual: Any) -> None:
        want = comparable(expected)
        got = comparable([actual[c] for c in COLUMNS])
        if want == got:
            return
        if actual["id"] != expected.id:
            home = await self.pool.fetchval(
                f"SELECT seq FROM {self.s}.chain WHERE kind = 'event' AND event_id = $1", actual["id"]
            )
            if home is not None:
                self.add("reordered", seq, "events", f"event {actual['id']} (log seq {home}) sits at seq {seq}")
                return
        changed = [c for c, a, b in zip(COLUMNS, want, got, strict=True) if a != b]
        self.add("modified", seq, "events", f"event {expected.id} (seq {seq}) differs in {', '.join(changed)}")

    async def _duplicates(self, conn: Connection) -> None:
        rows = await conn.fetch(
            f"""SELECT d.seq, d.event_id FROM {self.s}.chain d WHERE d.kind = 'duplicate' AND NOT EXISTS (
                SELECT 1 FROM {self.s}.chain e WHERE e.kind = 'event' AND e.event_id = d.event_id AND e.seq < d.seq)
                ORDER BY d.seq LIMIT 10"""
        )
        for r in rows:
            self.add(
                "modified",
                r["seq"],
                "chain",
                f"seq {r['seq']} is marked a duplicate of {r['event_id']}, which no earlier entry holds",
            )


async def verify(
    bus: Bus,
    pool: asyncpg.Pool,
    schema: str,
    public: Ed25519PublicKey | None,
    *,
    limit: int = 20,
    max_behind: int | None = None,
    wait_s: float = 0.0,
    witness: Path | None = None,
) -> Report:
    """Verify ``schema`` against the log; ``public`` is the trusted checkpoint key (None: skip them),
    ``witness`` the witness file, if there is one. With ``max_behind``, a projection further behind
    the log than that (after ``wait_s``) fails."""
    return await Verifier(bus, pool, schema, public, limit, max_behind, wait_s, witness).run()


__all__ = ["Divergence", "Report", "Verifier", "verify"]
