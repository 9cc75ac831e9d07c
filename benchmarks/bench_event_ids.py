"""What the event-id claims cost a durable consumer: one fsynced key-value write per message.

    python benchmarks/bench_event_ids.py [--smoke] [--rounds N] [--events N] [--out FILE.json]

Every kernel consumer claims each event's CloudEvent id in ``AGENTOS_EVENT_IDS`` before its
handler runs (``agentos_kernel.identity``), so that a copy of an event published again under the
same id is skipped and one with other content is dead-lettered. This measures that cost.

Method (/work/shared/BENCHMARKING.md): one embedded nats-server with the product default
``sync_interval: always`` (every write, the claims included, fsynced before its ack), a fresh
store. Each round publishes ``--events`` ~1 KiB ``task.assigned`` events to a subject of its own
per side, then drains them with a fresh durable consumer and times first fetch to last handled
event. Sides, interleaved in each round so load changes hit all alike:

* ``raw``: nats-py pull consumer, explicit ack awaited per message (the anchor);
* ``kernel, ids off``: the kernel's :class:`~agentos_kernel.consumer.Consumer` with
  ``AGENTOS_EVENT_IDS_TTL_S=0`` (no claims);
* ``kernel, ids on``: the same with the default claims.

Each consumer runs at concurrency 1 (a message's whole cost is on the critical path) and at the
kernel's default of 16. Reported: events/s (median of rounds), the cost per event, and the ratios
``ids on / ids off`` (what the claim adds) and each side to the raw anchor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedNats
from agentos_schemas import EVENTS_STREAM, Event
from agentos_schemas.events import TaskAssigned
from nats.js import api

SIDES = ("raw", "kernel, ids off", "kernel, ids on")
FULL = {"rounds": 7, "events": 2000}
SMOKE = {"rounds": 1, "events": 40}


def task(i: int) -> TaskAssigned:
    return TaskAssigned(
        task_id=f"bench/{i}",
        goal_id="bench",
        step_id="s",
        attempt=1,
        agent="a",
        capability="c",
        instruction="x" * 900,
        goal_text="bench",
    )


async def publish(bus: Bus, tenant: str, n: int) -> None:
    await bus.publish_many([bus.new(task(i), tenant=tenant) for i in range(n)])


async def drain_raw(bus: Bus, subject: str, n: int, durable: str) -> float:
    config = api.ConsumerConfig(
        durable_name=durable,
        filter_subject=subject,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
    )
    psub = await bus.js.pull_subscribe(subject, durable=durable, stream=EVENTS_STREAM, config=config)
    started, done = time.perf_counter(), 0
    while done < n:
        for msg in await psub.fetch(min(256, n - done), timeout=10):
            await msg.ack_sync()
            done += 1
    elapsed = time.perf_counter() - started
    await psub.unsubscribe()
    await bus.js.delete_consumer(EVENTS_STREAM, durable)
    return elapsed


async def drain_kernel(bus: Bus, subject: str, n: int, durable: str, concurrency: int) -> float:
    handled = 0
    finished = asyncio.Event()

    async def handle(event: Event[Any]) -> None:
        nonlocal handled
        handled += 1
        if handled >= n:
            finished.set()

    started = time.perf_counter()
    consumer = await bus.consumer(durable, [subject], handle, concurrency=concurrency).start()
    await asyncio.wait_for(finished.wait(), timeout=300)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await bus.js.delete_consumer(EVENTS_STREAM, durable)
    return elapsed


async def run(sizes: dict[str, int]) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="agentos-bench-ids-"))
    server = EmbeddedNats(root / "nats", sync="always")
    url = server.start()
    base = KernelSettings(nats_url=url, state_dir=root, control=False)
    buses = {
        "kernel, ids on": await Bus.connect(base, source="bench-on"),
        "kernel, ids off": await Bus.connect(base.model_copy(update={"event_ids_ttl_s": 0}), source="bench-off"),
    }
    buses["raw"] = buses["kernel, ids off"]
    await buses["kernel, ids on"].provision()
    n = sizes["events"]
    samples: dict[str, dict[int, list[float]]] = {s: {1: [], 16: []} for s in SIDES}
    try:
        for r in range(sizes["rounds"]):
            for concurrency in (1, 16):
                for side in SIDES:
                    tenant = f"b{r}c{concurrency}{SIDES.index(side)}"
                    subject = f"agentos.{tenant}.task.assigned"
                    await publish(buses["kernel, ids off"], tenant, n)
                    durable = f"bench-{tenant}"
                    if side == "raw":
                        if concurrency == 16:
                            continue  # one raw anchor per round (it has no concurrency setting)
                        elapsed = await drain_raw(buses[side], subject, n, durable)
                    else:
                        elapsed = await drain_kernel(buses[side], subject, n, durable, concurrency)
                    samples[side][concurrency].append(n / elapsed)
    finally:
        for bus in {id(b): b for b in buses.values()}.values():
            await bus.close()
        server.stop()
    return summarize(samples, sizes)


def summarize(samples: dict[str, dict[int, list[float]]], sizes: dict[str, int]) -> dict[str, Any]:
    rates = {side: {c: statistics.median(xs) for c, xs in by.items() if xs} for side, by in samples.items()}
    raw = rates["raw"][1]
    out: dict[str, Any] = {
        "durability": "sync_interval: always (every write fsynced before its ack)",
        "machine": {"python": platform.python_version(), "nproc": os.cpu_count()},
        "sizes": sizes,
        "events_per_s": {side: {str(c): round(v, 1) for c, v in by.items()} for side, by in rates.items()},
        "us_per_event": {side: {str(c): round(1e6 / v, 1) for c, v in by.items()} for side, by in rates.items()},
        "ratios": {},
    }
    for c in (1, 16):
        on, off = rates["kernel, ids on"][c], rates["kernel, ids off"][c]
        out["ratios"][f"concurrency {c}"] = {
            "ids on / ids off (time per event)": round(off / on, 2),
            "claim cost per event (us)": round(1e6 / on - 1e6 / off, 1),
            "ids on vs raw anchor (time per event)": round(raw / on, 2),
        }
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| side | events/s, concurrency 1 | events/s, concurrency 16 |", "|---|---|---|"]
    for side, by in result["events_per_s"].items():
        lines.append(f"| {side} | {by.get('1', '—')} | {by.get('16', '—')} |")
    for name, r in result["ratios"].items():
        lines.append(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--events", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = dict(SMOKE if args.smoke else FULL)
    sizes.update({k: v for k, v in (("rounds", args.rounds), ("events", args.events)) if v})
    result = asyncio.run(run(sizes))
    result["mode"] = "smoke" if args.smoke else "full"
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\ndurability: {result['durability']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
