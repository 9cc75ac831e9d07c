"""A governed MCP tool call next to the same call made directly with the SDK client, same run.

    python benchmarks/bench_mcp.py [--smoke] [--out FILE.json]

Method: fresh embedded nats-server (JetStream, the default durability: ``sync_interval`` 2 min) and
Postgres; the real policy service in this process (the connector tests' policy, no rate limits
hit). The server is the reference ``mcp-server-time`` over stdio, two instances: one behind the
direct SDK client (``mcp.Client.call_tool``, the anchor), one behind the specialist's tool path
(``agentos_specialist.toolpath.call_tool``: policy decision over NATS, the call, result cap and
marking, redaction as the agent loop does it; the policy publishes ``policy.decided``). Latency:
one call in flight, blocks of anchor A and governed B interleaved (A B A B …), p50 of each and the
median of per-pair p50 differences (target: ≤ 2 ms added). Throughput: 32 concurrent tasks, each
calling in a loop, interleaved blocks (target: ≥ 0.7× the direct client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FULL = {"block": 300, "pairs": 5, "warmup": 100, "tput_n": 1600, "tput_pairs": 3, "tasks": 32}
SMOKE = {"block": 40, "pairs": 2, "warmup": 20, "tput_n": 128, "tput_pairs": 1, "tasks": 32}
ARGS = {"timezone": "Europe/Paris"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def throughput(call: Callable[[], Awaitable[Any]], n: int, tasks: int) -> float:
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await call()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return n / (time.perf_counter() - t)


async def governed_call(bus: Any, calls: int) -> Callable[[], Awaitable[Any]]:
    from agentos_kernel.redact import redact
    from agentos_specialist import toolpath
    from agentos_specialist.tools import ToolContext

    from tests.policy.conftest import context_event
    from tests.specialist.conftest import ring

    the_ring = ring(bus)
    tools = await the_ring.resolve(("time.get_current_time",))
    # Each call is a task of its own (the policy's loop guard counts per task and goal). A task's
    # context.ready exists before it calls a tool, so the events are built before the clock runs.
    events = [context_event(bus, "bench", "bencher", f"g-bench-{i}", f"g-bench-{i}/r0/s1/a1") for i in range(calls)]
    counter = [0]

    async def call() -> str:
        counter[0] += 1
        ctx = ToolContext(bus, events[counter[0] % calls])
        text, ok = await toolpath.call_tool(
            tools, ("time.get_current_time",), ctx, "time__get_current_time", json.dumps(ARGS), f"c{counter[0]}"
        )
        assert ok, text
        return redact(text)

    call.ring = the_ring  # type: ignore[attr-defined]
    return call


async def bench(sizes: dict[str, int]) -> dict[str, Any]:
    from agentos_kernel import Bus, KernelSettings
    from agentos_kernel.service import start_service, stop_service
    from agentos_kernel.testing import test_servers
    from agentos_policy.service import setup
    from mcp import Client, StdioServerParameters

    os.environ["AGENTOS_POLICY_DIR"] = str(ROOT / "tests" / "specialist" / "policies" / "mcp")
    with test_servers() as (nats_url, db_url):
        settings = KernelSettings(nats_url=nats_url, database_url=db_url)
        bus = await Bus.connect(settings, source="bench")
        await bus.provision()
        policy = await start_service("policy", setup, settings, database=True)
        total = sizes["warmup"] + sizes["pairs"] * sizes["block"] + sizes["tput_pairs"] * sizes["tput_n"]
        governed = await governed_call(bus, total + 1)
        server = shutil.which("mcp-server-time") or str(Path(sys.executable).parent / "mcp-server-time")
        async with Client(StdioServerParameters(command=server), mode="auto", cache=None) as client:

            async def direct() -> Any:
                return await client.call_tool("get_current_time", ARGS)

            try:
                return await measure(direct, governed, sizes)
            finally:
                await governed.ring.close()  # type: ignore[attr-defined]
                await stop_service(policy)
                await bus.close()


async def measure(
    direct: Callable[[], Awaitable[Any]], governed: Callable[[], Awaitable[Any]], sizes: dict[str, int]
) -> dict[str, Any]:
    await latency(direct, sizes["warmup"])
    await latency(governed, sizes["warmup"])
    a: list[float] = []
    b: list[float] = []
    diffs: list[float] = []
    for _ in range(sizes["pairs"]):
        da = await latency(direct, sizes["block"])
        db = await latency(governed, sizes["block"])
        a += da
        b += db
        diffs.append(statistics.median(db) - statistics.median(da))
    tput_a: list[float] = []
    tput_b: list[float] = []
    for _ in range(sizes["tput_pairs"]):
        tput_a.append(await throughput(direct, sizes["tput_n"], sizes["tasks"]))
        tput_b.append(await throughput(governed, sizes["tput_n"], sizes["tasks"]))
    added = statistics.median(diffs)
    ratio = statistics.median(tput_b) / statistics.median(tput_a)
    return {
        "direct": {"n": len(a), "p50_ms": round(pct(a, 0.5), 3), "p99_ms": round(pct(a, 0.99), 3)},
        "governed": {"n": len(b), "p50_ms": round(pct(b, 0.5), 3), "p99_ms": round(pct(b, 0.99), 3)},
        "p50_added_ms": round(added, 3),
        "throughput": {
            "tasks": sizes["tasks"],
            "direct_calls_per_s": round(statistics.median(tput_a), 1),
            "governed_calls_per_s": round(statistics.median(tput_b), 1),
            "ratio": round(ratio, 3),
        },
        "target_met": {"overhead_le_2ms": added <= 2.0, "throughput_ge_0.7x": ratio >= 0.7},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    os.environ.setdefault("AGENTOS_LOG_LEVEL", "WARNING")
    result = asyncio.run(bench(SMOKE if opts.smoke else FULL))
    result |= {
        "mode": "smoke" if opts.smoke else "full",
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(), "durability": "nats default sync"},
        "load": Path("/proc/loadavg").read_text().split()[:3],
    }
    print("| measure | direct SDK client | governed (AgentOS) | ratio / added |")
    print("|---|---|---|---|")
    d, g, t = result["direct"], result["governed"], result["throughput"]
    print(f"| p50 latency (ms) | {d['p50_ms']} | {g['p50_ms']} | +{result['p50_added_ms']} ms |")
    print(f"| p99 latency (ms) | {d['p99_ms']} | {g['p99_ms']} | |")
    print(f"| calls/s, {t['tasks']} tasks | {t['direct_calls_per_s']} | {t['governed_calls_per_s']} | {t['ratio']}x |")
    if opts.out:
        opts.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
