"""``agentos audit rebuild``: project the log again into a fresh schema and prove it equals the live
projection — a digest over the ordered rows of both, up to the live head when the rebuild began."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import multiprocessing
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
from agentos_kernel import Bus
from agentos_kernel.db import Connection

from agentos_audit import schema as sch
from agentos_audit.canonical import GENESIS
from agentos_audit.derive import COLUMNS, PROJECTOR_VERSION, comparable
from agentos_audit.items import derive_range
from agentos_audit.logread import read_log, stream_bounds
from agentos_audit.writer import Item, write_batch

_encoder = msgspec.json.Encoder(order="sorted")
#: Derive this many events, then let the write in flight and the log reader run.
_YIELD_EVERY = 10
_GC_THRESHOLD = 20_000
_CHAIN = "SELECT seq, kind, event_id, code, reason, hash FROM {s}.chain WHERE seq <= $1 ORDER BY seq"
_EVENTS = "SELECT {cols}, data::text AS data FROM {s}.events WHERE seq <= $1 ORDER BY seq, id"


@dataclass
class RebuildReport:
    """The outcome of one rebuild."""

    live: str
    target: str
    up_to: int
    chain_rows: int
    event_rows: int
    seconds: float
    live_digest: str
    rebuilt_digest: str
    first_difference: int | None
    kept: bool

    @property
    def equal(self) -> bool:
        """True when the rebuilt projection equals the live one."""
        return self.live_digest == self.rebuilt_digest


async def project_range(
    bus: Bus, pool: asyncpg.Pool, target: str, lo: int, hi: int, *, batch: int = 1000, workers: int | None = None
) -> int:
    """Project stream sequences ``lo..hi`` into the (fresh) ``target`` schema; returns rows chained.

    A pipeline: the log is read while the previous batch is written (writes stay in order); deriving
    a batch gives the event loop a turn every few events, so the write in flight and the log reader
    progress meanwhile instead of waiting for the whole batch to be derived. With
    ``workers``, batches are validated in that many worker processes while the log is read; on a
    2-core machine that was slower (the workers compete with NATS and Postgres), so it is off by
    default.
    """
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) if workers else None
    threshold = gc.get_threshold()
    # A bulk load allocates millions of short-lived objects that reference counting frees; collecting
    # every 700 net allocations (the default) cost ~5 % of the rebuild. Its live set stays small.
    gc.set_threshold(max(threshold[0], _GC_THRESHOLD), *threshold[1:])
    try:
        async with pool.acquire() as conn:
            head = await _pipeline(bus, conn, target, lo, hi, batch, executor)
            if head.seq < hi:  # the stream's tail is gone (retention): chain it as missing
                missing = [Item(s, b"", None) for s in range(head.seq + 1, hi + 1)]
                head = await write_batch(conn, target, head, missing, sch.Partitions(target), check_head=False)
    finally:
        gc.set_threshold(*threshold)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
    return head.seq - lo + 1


async def _pipeline(
    bus: Bus, conn: Connection, target: str, lo: int, hi: int, batch: int, executor: Executor | None
) -> sch.Head:
    head, partitions = sch.Head(lo - 1, GENESIS), sch.Partitions(target)
    derives: deque[asyncio.Future[list[Item]]] = deque()
    write: asyncio.Future[sch.Head] | None = None
    after, depth = lo - 1, 2 if executor is not None else 0
    try:
        async for stored in read_log(bus.js, lo, hi, batch=batch):
            derives.append(asyncio.ensure_future(derive_range(bus, after, stored, executor, yield_every=_YIELD_EVERY)))
            after = stored[-1].seq
            while len(derives) > depth:
                items = await derives.popleft()
                head = await write if write is not None else head
                write = asyncio.ensure_future(write_batch(conn, target, head, items, partitions, check_head=False))
        while derives:
            items = await derives.popleft()
            head = await write if write is not None else head
            write = asyncio.ensure_future(write_batch(conn, target, head, items, partitions, check_head=False))
        return await write if write is not None else head
    finally:
        # Of two result types, and only waited for: Future is invariant, so only Any holds both.
        pending: list[asyncio.Future[Any]] = [f for f in (*derives, write) if f is not None and not f.done()]
        for f in pending:
            f.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def build_indexes(pool: asyncpg.Pool, schema: str, *, connections: int = 2) -> None:
    """Build the indexes a bulk load skipped (:data:`schema.INDEXES`), over ``connections`` at once:
    the rebuild has nothing else to do meanwhile, so Postgres may use every core."""
    statements = deque(s for s in sch.INDEXES.format(schema=sch.check_schema(schema)).split(";") if s.strip())

    async def build() -> None:
        async with pool.acquire() as conn:
            while statements:
                await conn.execute(statements.popleft())

    await asyncio.gather(*(build() for _ in range(max(1, connections))))


def _row_bytes(kind: str, record: Any) -> bytes:
    if kind == "chain":
        return _encoder.encode(
            [
                record["seq"],
                record["kind"],
                record["event_id"],
                record["code"],
                record["reason"],
                bytes(record["hash"]).hex(),
            ]
        )
    return _encoder.encode(comparable([record[c] for c in COLUMNS]))


async def _records(conn: Connection, kind: str, schema: str, up_to: int) -> AsyncIterator[tuple[Any, bytes]]:
    sql = (_CHAIN if kind == "chain" else _EVENTS).format(cols=", ".join(COLUMNS[:-1]), s=schema)
    async for record in conn.cursor(sql, up_to, prefetch=2000):
        yield record["seq"], _row_bytes(kind, record)


async def compare(pool: asyncpg.Pool, a: str, b: str, up_to: int) -> tuple[str, str, int, int, int | None]:
    """Digests of schemas ``a`` and ``b`` (chain then events, ordered), row counts of ``a``, and the
    first sequence where they differ (None if equal)."""
    da, db = hashlib.sha256(), hashlib.sha256()
    counts = {"chain": 0, "events": 0}
    first: int | None = None
    async with (
        pool.acquire() as ca,
        pool.acquire() as cb,
        ca.transaction(isolation="repeatable_read", readonly=True),
        cb.transaction(isolation="repeatable_read", readonly=True),
    ):
        for kind in ("chain", "events"):
            left, right = _records(ca, kind, a, up_to), _records(cb, kind, b, up_to)
            while True:
                x, y = await anext(left, None), await anext(right, None)
                if x is None and y is None:
                    break
                if x is not None:
                    da.update(x[1])
                    counts[kind] += 1
                if y is not None:
                    db.update(y[1])
                if first is None and (x is None or y is None or x[1] != y[1]):
                    first = min(r[0] for r in (x, y) if r is not None)
    return da.hexdigest(), db.hexdigest(), counts["chain"], counts["events"], first


async def rebuild(
    bus: Bus,
    pool: asyncpg.Pool,
    live: str,
    target: str | None = None,
    *,
    keep: bool = False,
    batch: int = 1000,
    workers: int | None = None,
) -> RebuildReport:
    """Rebuild ``live`` from the log into ``target`` (default ``<live>_rebuild``, replaced if it
    exists) and compare; the rebuilt schema is dropped afterwards unless ``keep``."""
    live = sch.check_schema(live)
    target = sch.check_schema(target or f"{live}_rebuild")
    started = time.perf_counter()
    bounds = await pool.fetchrow(f"SELECT min(seq) AS lo, max(seq) AS hi FROM {live}.chain")
    assert bounds is not None  # an aggregate without GROUP BY: always one row
    lo, hi = bounds["lo"] or 1, bounds["hi"] or 0
    _, _, created = await stream_bounds(bus.js)
    await sch.drop_schema(pool, target)
    await sch.migrate_schema(pool, target, indexes=False)
    await sch.write_meta(
        pool,
        target,
        {"stream_created": created, "projector_version": PROJECTOR_VERSION, "rebuilt_from": live, "tree_base": str(lo)},
    )
    if hi >= lo:
        await project_range(bus, pool, target, lo, hi, batch=batch, workers=workers)
    await build_indexes(pool, target)
    seconds = time.perf_counter() - started
    live_digest, rebuilt_digest, chain_rows, event_rows, first = await compare(pool, live, target, hi)
    if not keep:
        await sch.drop_schema(pool, target)
    return RebuildReport(live, target, hi, chain_rows, event_rows, seconds, live_digest, rebuilt_digest, first, keep)


__all__ = ["RebuildReport", "build_indexes", "compare", "project_range", "rebuild"]
