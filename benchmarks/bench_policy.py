"""Policy decision latency and throughput over NATS, next to a raw request/reply round trip.

    python benchmarks/bench_policy.py [--smoke] [--out FILE.json]

Method (/work/shared/BENCHMARKING.md): fresh embedded nats-server (JetStream file storage,
``sync_interval: always``) and Postgres per run. A worker process runs the real policy service (the
shipped policy minus rate limits) AND a raw nats-py echo responder on the same event loop; this
process calls. Three processes or more, so none is pinned. Latency: one request in flight, blocks
of raw anchor A and decision B interleaved (A B A B …), p50/p99/max over all samples and the
median of per-pair p50 differences (target: a decision adds < 1 ms). A decision is
``PolicyClient.decide`` of a tool call (build, serialize, request, parse); the anchor sends
pre-encoded bytes of the request's size and gets a reply of the decision's size. Throughput: 64 in
flight, interleaved. Also: model-call decisions (one Postgres budget reservation each) and the
pure ``evaluate`` cost. Every decision is also published as ``policy.decided`` after the reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import yaml

RAW_SUBJECT = "bench.policy.echo"
#: Requests per latency block, pairs, warm-up, throughput requests, pairs, in flight, model calls, engine calls.
Sizes = NamedTuple(
    "Sizes", [(n, int) for n in ("block", "pairs", "warmup", "tput_n", "tput_pairs", "inflight", "model_n", "engine_n")]
)
FULL = Sizes(block=1000, pairs=6, warmup=500, tput_n=6000, tput_pairs=5, inflight=64, model_n=1000, engine_n=5000)
SMOKE = Sizes(block=150, pairs=2, warmup=50, tput_n=400, tput_pairs=2, inflight=32, model_n=60, engine_n=500)


# -- environment ---------------------------------------------------------------------------------
def cpu_times() -> list[int]:
    """/proc/stat CPU ticks, plus (last) this process's and its reaped children's CPU ticks."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    t = os.times()
    return [*ticks, int((t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK"))]


def env_span(before: list[int], after: list[int], load_before: list[str]) -> dict[str, Any]:
    """Load, CPU steal, and the share of all CPUs used by processes outside this run (Postgres counts there)."""
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta[:8]) or 1
    steal, busy = 100.0 * delta[7] / total, total - delta[3] - delta[4] - delta[7]
    other = max(0.0, 100.0 * (busy - delta[-1]) / total)
    return {
        "load_before": load_before,
        "load_after": Path("/proc/loadavg").read_text().split()[:3],
        "steal_pct": round(steal, 3),
        "steal_flag": steal > 2.0,
        "other_cpu_pct": round(other, 1),
        "contended_flag": other > 10.0,
    }


def machine() -> dict[str, Any]:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
    )
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kb / 2**20, 1)}


def versions() -> dict[str, str]:
    from agentos_kernel.embedded import nats_server_binary

    out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=False)
    return {
        "python": platform.python_version(),
        "nats-server": out.stdout.strip() or out.stderr.strip(),
        "event_loop": "asyncio (default selector loop, no uvloop)",
        **{p: metadata.version(p) for p in ("nats-py", "pydantic", "asyncpg", "agentos-fleet")},
    }


def summary(ms: list[float]) -> dict[str, Any]:
    xs = sorted(ms)
    at = {q: round(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))], 4) for q in (0.5, 0.99)}
    return {"n": len(xs), "p50_ms": at[0.5], "p99_ms": at[0.99], "max_ms": round(xs[-1], 4)}


# -- the worker process: the policy service plus a raw echo responder ----------------------------
async def worker(nats_url: str, db_url: str, policy_dir: str, reply_bytes: int) -> None:
    from agentos_kernel import KernelSettings
    from agentos_kernel.service import start_service, stop_service
    from agentos_policy.service import setup

    os.environ["AGENTOS_POLICY_DIR"] = policy_dir
    ctx = await start_service("policy", setup, KernelSettings(nats_url=nats_url, database_url=db_url), database=True)
    reply = b"x" * reply_bytes

    async def echo(msg: Any) -> None:
        await msg.respond(reply)

    await ctx.bus.nc.subscribe(RAW_SUBJECT, queue="echo", cb=echo)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the caller closes stdin
    await stop_service(ctx)


# -- the caller ------------------------------------------------------------------------------------
def bench_policy_dir(root: Path) -> Path:
    from agentos_policy.model import default_policy_dir

    policy = yaml.safe_load((default_policy_dir() / "policy.yaml").read_text())
    policy.update(
        version="bench-1",
        rate_limits=[],
        loops={"same_call_per_task": 10**9, "same_call_per_goal": 10**9, "replans_per_goal": 10**6},
        budgets=[{"scope": "tenant", "period": "day", "usd": 10**6}, {"scope": "agent", "period": "day", "usd": 10**6}],
    )
    (root / "policy").mkdir()
    (root / "policy" / "policy.yaml").write_text(yaml.safe_dump(policy))
    return root / "policy"


def tool_request(i: int) -> Any:
    from agentos_schemas.rpc import PolicyRequest

    return PolicyRequest(
        tenant="bench",
        principal="agent:research",
        agent="research",
        action="tool_call",
        resource="search_documents",
        tool="search_documents",
        goal_id=f"g{i % 500}",
        task_id=f"t{i % 500}",
        args={"query": f"competitor pricing {i}"},
        call_id=f"c{i}",
    )


def model_request(i: int) -> Any:
    from agentos_schemas.rpc import PolicyRequest

    return PolicyRequest(
        tenant="bench",
        principal="agent:writer",
        agent="writer",
        action="model_call",
        resource="smart",
        goal_id=f"m{i % 500}",
        task_id=f"mt{i % 500}",
        args={"fallbacks": "fast"},
        estimated_cost_usd=0.0025,
        estimated_tokens=5000,
    )


async def one_block(send: Any, n: int, start: int) -> list[float]:
    out = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        await send(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def tput_block(send: Any, n: int, inflight: int, start: int) -> float:
    counter = iter(range(start, start + n))

    async def lane() -> None:
        for i in counter:
            await send(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(inflight)))
    return n / (time.perf_counter() - t0)


async def latency_pairs(raw: Any, decide: Any, sizes: Sizes) -> dict[str, Any]:
    """Interleaved blocks, raw anchor then decision, one request in flight."""
    await one_block(raw, sizes.warmup, 0)
    await one_block(decide, sizes.warmup, 10**7)
    raw_ms: list[float] = []
    dec_ms: list[float] = []
    ratios, adds = [], []
    for p in range(sizes.pairs):
        a = await one_block(raw, sizes.block, p * sizes.block)
        b = await one_block(decide, sizes.block, p * sizes.block)
        raw_ms, dec_ms = raw_ms + a, dec_ms + b
        ratios.append(statistics.median(b) / statistics.median(a))
        adds.append(statistics.median(b) - statistics.median(a))
    return {
        "raw": summary(raw_ms),
        "decision": summary(dec_ms),
        "p50_added_ms": round(statistics.median(adds), 4),
        "p50_added_ms_range": [round(min(adds), 4), round(max(adds), 4)],
        "p50_ratio": round(statistics.median(ratios), 3),
    }


async def caller(nats_url: str, sizes: Sizes, request_bytes: int) -> dict[str, Any]:
    from agentos_kernel import Bus, KernelSettings
    from agentos_kernel.policy import PolicyClient, PolicyClientSettings

    bus = await Bus.connect(KernelSettings(nats_url=nats_url), source="bench")
    client = PolicyClient(bus, PolicyClientSettings(timeout_s=10))
    body = b"y" * request_bytes

    async def raw(i: int) -> None:
        await bus.nc.request(RAW_SUBJECT, body, timeout=10)

    async def decide(i: int) -> None:
        got = await client.decide(tool_request(i))
        assert got.decision == "allow", got.reasons

    async def model(i: int) -> None:
        got = await client.decide(model_request(i))
        assert got.decision == "allow" and got.reservation_id, got.reasons

    result = await latency_pairs(raw, decide, sizes)
    raw_tp, dec_tp = [], []
    for start in range(2 * 10**7, 2 * 10**7 + sizes.tput_pairs * sizes.tput_n, sizes.tput_n):
        raw_tp.append(await tput_block(raw, sizes.tput_n, sizes.inflight, start))
        dec_tp.append(await tput_block(decide, sizes.tput_n, sizes.inflight, start))
    model_ms = await one_block(model, sizes.model_n, 0)
    await bus.close()
    return {
        **result,
        "model_call_with_reservation": summary(model_ms),
        "throughput": {"inflight": sizes.inflight, "raw_req_per_s": med(raw_tp), "decisions_per_s": med(dec_tp)},
    }


def med(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs)), "min": round(min(xs)), "max": round(max(xs))}


def engine_us(n: int) -> dict[str, float]:
    """Best-of-5 µs per evaluate() of a tool call (pure CPU)."""
    from agentos_policy.engine import evaluate
    from agentos_policy.model import default_policy_dir, load_policy
    from agentos_policy.state import State

    policy, state, requests = load_policy(default_policy_dir()), State(), [tool_request(i) for i in range(n)]
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        _ = [evaluate(policy, r, state, 0.0) for r in requests]
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return {"evaluate_us_best_of_5": round(min(runs), 2)}


def sizes_on_wire() -> tuple[int, int]:
    from agentos_schemas.rpc import PolicyDecision

    reply = PolicyDecision(
        decision="allow",
        code="ok",
        reasons=("allowed by policy bench-1",),
        policy_version="bench-1",
        decision_id="0" * 36,
        risk="low",
    )
    return len(tool_request(123456).model_dump_json()), len(reply.model_dump_json())


def run(smoke: bool) -> dict[str, Any]:
    from agentos_kernel.embedded import EmbeddedNats, EmbeddedPostgres

    sizes = SMOKE if smoke else FULL
    root = Path(tempfile.mkdtemp(prefix="agentos-bench-policy-"))
    nats, pg = EmbeddedNats(root / "nats", sync="always"), EmbeddedPostgres(root / "pg")
    request_bytes, reply_bytes = sizes_on_wire()
    load, before = Path("/proc/loadavg").read_text().split()[:3], cpu_times()
    try:
        nats_url, db_url = nats.start(), pg.start()
        folder = bench_policy_dir(root)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", nats_url, db_url, str(folder), str(reply_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            started = select.select([proc.stdout], [], [], 90)[0] and proc.stdout.readline().strip() == "ready"
            if not started:
                raise RuntimeError("the worker (policy service) did not start within 90 s")
            result = asyncio.run(caller(nats_url, sizes, request_bytes))
        finally:
            proc.stdin.close()  # type: ignore[union-attr]  # the worker stops when its stdin closes
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()  # never leave it behind
    finally:
        pg.stop()
        nats.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "mode": "smoke" if smoke else "full",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "versions": versions(),
        "env": env_span(before, cpu_times(), load),
        "storage": "file, sync_interval: always; Postgres embedded (defaults)",
        "bytes": {"request": request_bytes, "reply": reply_bytes},
        **result,
        "engine": engine_us(sizes.engine_n),
        "target": "decision adds < 1 ms p50 over the raw round trip",
        "target_met": result["p50_added_ms"] < 1.0,
    }


def table(r: dict[str, Any]) -> str:
    raw, dec, mod, tp = r["raw"], r["decision"], r["model_call_with_reservation"], r["throughput"]
    return "\n".join(
        [
            "| measure | raw request/reply | policy decision (tool call) |",
            "|---|---|---|",
            *(
                f"| {k.replace('_', ' ')} (1 in flight) | {raw[k]} | {dec[k]} |"
                for k in ("p50_ms", "p99_ms", "max_ms", "n")
            ),
            f"| per second, {tp['inflight']} in flight (median, min–max) | {tp['raw_req_per_s']['median']} "
            f"({tp['raw_req_per_s']['min']}–{tp['raw_req_per_s']['max']}) | {tp['decisions_per_s']['median']} "
            f"({tp['decisions_per_s']['min']}–{tp['decisions_per_s']['max']}) |",
            f"| decision adds at p50 (median of pairs, min–max) | | {r['p50_added_ms']} ms "
            f"({r['p50_added_ms_range'][0]}–{r['p50_added_ms_range'][1]}); ratio {r['p50_ratio']} |",
            f"| model-call decision with budget reservation (Postgres) | | "
            f"p50 {mod['p50_ms']} ms, p99 {mod['p99_ms']} ms |",
            f"| engine evaluate() alone | | {r['engine']['evaluate_us_best_of_5']} µs |",
        ]
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, proves the script works (< 30 s)")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args()
    result = run(args.smoke)
    _ = args.out and args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    env = result["env"]
    print(
        f"\nenv: load {env['load_before']} -> {env['load_after']}, steal {env['steal_pct']}%"
        f"{' (DISCARD: steal > 2%)' if env['steal_flag'] else ''}, other processes {env['other_cpu_pct']}% "
        f"of all CPUs; target met: {result['target_met']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
