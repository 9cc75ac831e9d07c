"""Audit tree benchmark: proof latency on a large stored tree, and what maintaining the tree costs
the live projection, each against an anchor measured in the same run.

    python benchmarks/bench_audit_tree.py [--smoke] [--out FILE.json] [--leaves N] [--events N]

Method (/work/shared/BENCHMARKING.md). One fresh embedded Postgres 18 (``synchronous_commit`` on)
and one fresh embedded nats-server (file storage, ``sync_interval`` default) in a new temporary
directory, on free ports; three processes, none pinned.

proofs   a tree of N synthetic leaves (leaf i's entry is ``{"id":"e<i>"}``) built without projecting
         events: its complete-subtree rows are computed with :class:`agentos_audit.merkle.Frontier`
         (what the writer uses) and COPYed into the product's ``tree`` table, level by level, in
         chunks; 64 checkpoints at random sizes are signed from the stored tree. Chain rows exist
         only for the leaves proved (the proof looks its event up by id: a unique-index lookup).
         Timed, interleaved: ``prove.inclusion_proof`` of a random leaf in the newest checkpoint and
         ``prove.consistency_proof`` between two random checkpoints (what ``agentos audit prove``
         runs), and the anchor: a primary-key lookup of one random tree node. A sample of proofs
         is checked with ``agentos_verify``.
ingest   events/s of the audit projector (the bench_audit path: 512 per transaction, signed
         checkpoints every 1000) over the same log, interleaved A B A B: A = tree maintenance
         switched off in this process (``Frontier.extend`` appends nothing, so no leaf hashing,
         no node rows; checkpoints are still signed and stored), B = the projector as shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from agentos_audit import merkle, prove, tree
from agentos_audit.lifecycle import ensure_schema
from agentos_audit.schema import drop_schema, write_meta
from agentos_audit.signing import Signer, load_or_create, vkey
from agentos_audit.writer import CHAIN_COLUMNS, store_checkpoint
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedNats, EmbeddedPostgres
from bench_audit import ingest, lat, machine, med, prepared, snapshot, span_env, versions

TARGETS = {"proof_p95_ms_max": 5.0, "ingest_ratio_min": 0.8}
FULL = {"leaves": 10_000_000, "samples": 5000, "events": 50_000, "pairs": 5}
SMOKE = {"leaves": 50_000, "samples": 200, "events": 1500, "pairs": 2}
ORIGIN = "agentos.local/audit"
CHUNK = 1 << 16


def entry(i: int) -> bytes:
    return b'{"id":"e%d"}' % i


async def build_tree(pool: asyncpg.Pool, schema: str, leaves: int) -> float:
    """COPY the complete subtrees of ``leaves`` synthetic leaves; returns seconds taken."""
    t0, frontier = time.perf_counter(), merkle.Frontier()
    async with pool.acquire() as conn:
        for start in range(0, leaves, CHUNK):
            stop = min(leaves, start + CHUNK)
            frontier, rows = frontier.extend(merkle.leaf_hash(entry(i)) for i in range(start, stop))
            rows.sort(key=lambda r: (r[0], r[1]))  # level by level: each level's keys ascend
            await conn.copy_records_to_table("tree", schema_name=schema, columns=tree.TREE_COLUMNS, records=rows)
        await conn.execute(f"ANALYZE {schema}.tree")
    await write_meta(pool, schema, {"tree_base": "1"})
    return time.perf_counter() - t0


async def sign_sizes(pool: asyncpg.Pool, schema: str, sizes: list[int], signer: Signer) -> None:
    async with pool.acquire() as conn:
        for size in sizes:
            root = await tree.root_at(conn, schema, size)
            await store_checkpoint(conn, schema, size, root, lambda n, r: signer.note(ORIGIN, n, r))


async def add_chain_rows(pool: asyncpg.Pool, schema: str, indexes: list[int]) -> None:
    rows = [(i + 1, "event", f"e{i}", None, None, entry(i), bytes(32)) for i in sorted(set(indexes))]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("chain", schema_name=schema, columns=CHAIN_COLUMNS, records=rows)


async def proof_section(pool: asyncpg.Pool, size: dict[str, int], signer: Signer) -> dict[str, Any]:
    schema, rnd, n = "audit_tree", random.Random(11), size["leaves"]
    await ensure_schema(pool, schema)
    built = await build_tree(pool, schema, n)
    sizes = sorted({n, *(rnd.randrange(1, n) for _ in range(63))})
    await sign_sizes(pool, schema, sizes, signer)
    proved = [rnd.randrange(n) for _ in range(size["samples"])]
    await add_chain_rows(pool, schema, proved)
    before, res = snapshot(), {"anchor": [], "inclusion": [], "consistency": []}
    for k, leaf in enumerate(proved):
        level = rnd.randrange(0, n.bit_length() - 1)
        t0 = time.perf_counter()
        await pool.fetchval(
            f"SELECT hash FROM {schema}.tree WHERE level = $1 AND idx = $2", level, rnd.randrange(n >> level)
        )
        t1 = time.perf_counter()
        doc = await prove.inclusion_proof(pool, schema, f"e{leaf}")
        t2 = time.perf_counter()
        old, new = sorted(rnd.sample(sizes, 2))
        cons = await prove.consistency_proof(pool, schema, old, new)
        t3 = time.perf_counter()
        for name, ms in zip(res, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            res[name].append(1000 * ms)
        if k % max(1, size["samples"] // 20) == 0:
            verify_proofs(doc, cons, signer)
    out: dict[str, Any] = {"leaves": n, "checkpoints": len(sizes), "build_s": round(built, 1)}
    out["tree_gib"] = round(await pool.fetchval(f"SELECT pg_total_relation_size('{schema}.tree')") / 2**30, 2)
    out |= {name: lat(ms) for name, ms in res.items()}
    out["env"] = span_env(before, snapshot())
    worst = max(out["inclusion"]["p95_ms"], out["consistency"]["p95_ms"])
    out["proof_pass"] = worst < TARGETS["proof_p95_ms_max"]
    out["inclusion_ratio_p50"] = round(out["inclusion"]["p50_ms"] / out["anchor"]["p50_ms"], 2)
    out["consistency_ratio_p50"] = round(out["consistency"]["p50_ms"] / out["anchor"]["p50_ms"], 2)
    await drop_schema(pool, schema)
    return out


def verify_proofs(inclusion: dict[str, Any], consistency: dict[str, Any], signer: Signer) -> None:
    """Check sampled proofs with the standalone verifier, as an auditor would."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as d:
        key = Path(d) / "audit.vkey"
        key.write_text(vkey(ORIGIN, signer.public))
        for name, doc in (("inclusion", inclusion), ("consistency", consistency)):
            path = Path(d) / f"{name}.json"
            path.write_text(json.dumps(doc))
            args = [sys.executable, "-m", "agentos_verify", str(path), "--key", str(key), "--origin", ORIGIN]
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            assert done.returncode == 0, (name, done.stdout, done.stderr)


@contextlib.contextmanager
def tree_off() -> Iterator[None]:
    """Switch tree maintenance off in this process: appending leaves appends nothing."""
    original = merkle.Frontier.extend
    setattr(merkle.Frontier, "extend", lambda self, leaves: (self, []))  # noqa: B010  (a benchmark's switch)
    try:
        yield
    finally:
        setattr(merkle.Frontier, "extend", original)  # noqa: B010


async def ingest_section(bus: Bus, pool: asyncpg.Pool, size: dict[str, int], key: Path) -> dict[str, Any]:
    n = size["events"]
    await bus.publish_raw_many(prepared(n), timeout=120)
    before, res = snapshot(), {"tree_off": [], "tree_on": []}
    with tree_off():
        await ingest(bus, pool, "audit_warm", n, key)
    await drop_schema(pool, "audit_warm")
    for rep in range(size["pairs"]):
        with tree_off():
            res["tree_off"].append(await ingest(bus, pool, f"audit_off{rep}", n, key))
        res["tree_on"].append(await ingest(bus, pool, f"audit_on{rep}", n, key))
        await drop_schema(pool, f"audit_off{rep}")
        await drop_schema(pool, f"audit_on{rep}")
    out: dict[str, Any] = {"events": n, "pairs": size["pairs"], **{k: med(v) for k, v in res.items()}}
    out["ingest_ratio"] = round(statistics.median(res["tree_on"]) / statistics.median(res["tree_off"]), 3)
    out["pair_ratios"] = [round(b / a, 3) for a, b in zip(res["tree_off"], res["tree_on"], strict=True)]
    out["ingest_pass"] = out["ingest_ratio"] >= TARGETS["ingest_ratio_min"]
    out["env"] = span_env(before, snapshot())
    return out


def table(result: dict[str, Any]) -> str:
    p, g = result["proofs"], result["ingest"]
    lines = [
        f"proofs on a {p['leaves']:,}-leaf tree ({p['tree_gib']} GiB, {p['checkpoints']} checkpoints):",
        "",
        "| measure | n | p50 ms | p95 ms | p99 ms | p50 / anchor |",
        "|---|---|---|---|---|---|",
    ]
    for name, ratio in (("anchor", 1.0), ("inclusion", p["inclusion_ratio_p50"])):
        v = p[name]
        lines.append(f"| {name} | {v['n']} | {v['p50_ms']} | {v['p95_ms']} | {v['p99_ms']} | {ratio} |")
    v = p["consistency"]
    lines.append(
        f"| consistency | {v['n']} | {v['p50_ms']} | {v['p95_ms']} | {v['p99_ms']} | {p['consistency_ratio_p50']} |"
    )
    lines += [
        "",
        "| ingest events/s (median, min-max) | tree off (anchor) | tree on | ratio (target >= 0.8) |",
        "|---|---|---|---|",
        f"| {g['events']:,} events, {g['pairs']} pairs | {g['tree_off']['median']:.0f} | "
        f"{g['tree_on']['median']:.0f} ({g['tree_on']['min']:.0f}-{g['tree_on']['max']:.0f}) | {g['ingest_ratio']} |",
    ]
    return "\n".join(lines)


async def run(size: dict[str, int], root: Path) -> dict[str, Any]:
    server, pg = EmbeddedNats(root / "nats", sync="default"), EmbeddedPostgres(root / "pg")
    url, db = server.start(), pg.start()
    try:
        bus = await Bus.connect(KernelSettings(nats_url=url, database_url=db), source="bench")
        await bus.provision()
        pool = await asyncpg.create_pool(db, min_size=2, max_size=6)
        assert pool is not None
        conf = {k: await pool.fetchval(f"SHOW {k}") for k in ("server_version", "synchronous_commit", "fsync")}
        signer = load_or_create(root / "key.pem")
        result = {"postgres": conf, "proofs": await proof_section(pool, size, signer)}
        result["ingest"] = await ingest_section(bus, pool, size, root / "key.pem")
        await pool.close()
        await bus.close()
        return result
    finally:
        pg.stop()
        server.stop()


async def main(smoke: bool, out: Path | None, leaves: int | None, events: int | None) -> dict[str, Any]:
    size = dict(SMOKE if smoke else FULL)
    size["leaves"], size["events"] = leaves or size["leaves"], events or size["events"]
    root = Path(tempfile.mkdtemp(prefix="bench-audit-tree-"))
    try:
        measured = await run(size, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "mode": "smoke" if smoke else "full",
        "machine": machine(),
        "versions": versions(),
        "targets": TARGETS,
        "sizes": size,
        "durability": "nats file storage, sync_interval default; postgres synchronous_commit on, fsync on",
        **measured,
    }
    result["table"] = table(result)
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=1, default=str))
    print(result["table"])
    if out is not None:
        out.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes (< 60 s), to prove the script works")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--leaves", type=int, help="tree size for the proofs (default 10M full, 50k smoke)")
    parser.add_argument("--events", type=int, help="events in the log (default 50k full, 1500 smoke)")
    args = parser.parse_args()
    asyncio.run(main(args.smoke, args.out, args.leaves, args.events))
