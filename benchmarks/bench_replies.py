"""Client CPU per pipelined JetStream publish: the kernel's ``Replies`` vs nats-py's ``publish_async``.

    python benchmarks/bench_replies.py [--n N]

One embedded nats-server (lazy fsync, file storage, fresh store dir), one stream, one process
publishing N 1 KiB messages with 64 acks in flight, each with its own ``Nats-Msg-Id``; the two
sides alternate twice in the same run. Reported per side: client CPU per publish (process time,
so other load on the machine moves it little) and publishes/s (wall time, noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

import nats
from agentos_kernel.embedded import EmbeddedNats
from agentos_kernel.replies import Replies, pub_ack
from nats.js import api

IN_FLIGHT = 64


async def side(name: str, n: int, replies: Replies, js: object) -> tuple[float, float]:
    body = b"x" * 1000
    stamp = time.time_ns()
    c0, t0 = time.process_time(), time.perf_counter()
    window: list[asyncio.Future[object]] = []
    for i in range(n):
        headers = {"Nats-Msg-Id": f"{name}-{stamp}-{i}"}
        if name == "replies":
            window.append(await replies.publish(f"bench.{i % 10}", body, headers))
        else:
            window.append(await js.publish_async(f"bench.{i % 10}", body, headers=headers))  # type: ignore[attr-defined]
        if len(window) >= IN_FLIGHT:
            result = await window.pop(0)
            if name == "replies":
                pub_ack(result)  # type: ignore[arg-type]
    for future in window:
        result = await future
        if name == "replies":
            pub_ack(result)  # type: ignore[arg-type]
    return 1e6 * (time.process_time() - c0) / n, n / (time.perf_counter() - t0)


async def main(n: int) -> None:
    server = EmbeddedNats(Path(tempfile.mkdtemp(prefix="agentos-bench-replies-")) / "nats", sync="default")
    url = server.start()
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=4096)
        await js.add_stream(api.StreamConfig(name="BENCH_REPLIES", subjects=["bench.>"]))
        replies = Replies(nc)
        print(
            f"python {platform.python_version()}, nats-py {metadata.version('nats-py')}, "
            f"{platform.machine()} x{__import__('os').cpu_count()}, n={n}, {IN_FLIGHT} in flight"
        )
        for name in ("replies", "publish_async", "replies", "publish_async"):
            cpu, rate = await side(name, n, replies, js)
            print(f"{name:14s} {cpu:6.1f} µs CPU per publish   {rate:8.0f} publishes/s")
        await replies.close()
    finally:
        await nc.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    asyncio.run(main(parser.parse_args().n))
