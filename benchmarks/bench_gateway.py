"""Gateway ingress vs publishing straight to JetStream, in one run against one embedded nats-server.

    python benchmarks/bench_gateway.py [--smoke] [--out FILE.json] [--workers N]

Three processes, unpinned (per /work/shared/BENCHMARKING.md): nats-server (lazy fsync, file
storage, fresh store dir), the gateway (uvicorn + httptools, asyncio loop, its own process; with
``--workers N``, N gateway processes bound to one port with ``SO_REUSEPORT``, as the service runs
with ``AGENTOS_GATEWAY_WORKERS=N``, their CPU summed), and this process as the load generator
(``CONCURRENCY`` requests in flight, loopback, keep-alive).
Each repetition runs, interleaved, on fresh tenants (so fresh subjects; the log denies purge):

- **anchor**: ``js.publish`` of the same ~1 KiB structured CloudEvents, awaiting each ack, with
  the same concurrency, from this process (what a client in the cluster would do);
- **webhook**: ``POST /webhooks/bench`` with Standard Webhooks signatures (signed beforehand),
  replay check (memory, then KV), validation against the catalogue, publish acknowledged before
  the 202, replay record written to KV behind the answer: the headline (docs/ingest.md);
- **events**: ``POST /events`` in structured mode with an API key (no signature, no replay KV);
- **webhook_batch**: the same, ``BATCH`` events per signed request (batch mode; latency is per request);
- **webhook_httpx**: the headline side again, driven by httpx instead of the minimal HTTP/1.1
  client the other HTTP sides use (httpx costs 1.5-3 ms of CPU per request here, so it shows
  what a Python integrator using httpx gets, not what the gateway can take).
- **floor_publish** and **floor_sealed**: the floor under the gateway's per-request cost, served
  by the same uvicorn in the same gateway process on bench-only routes (``with_floors``): read the
  body, decode and validate the CloudEvent against the catalogue, publish it and await the ack,
  answer 202; ``floor_publish`` publishes the received bytes, ``floor_sealed`` goes through the
  kernel's ``Bus.publish`` (redaction, personal fields sealed), as the gateway does. No signature,
  replay check, DLQ, idempotency or span: what any HTTP ingress of this design pays at least.

Events are ``ticket.received`` tickets from ``REQUESTERS`` people, so the gateway seals their
personal fields with each requester's key (crypto-shredding; the anchor publishes plaintext).
Every repetition checks that exactly N events were stored. Reported: events/s per side (median,
min-max), ratio of medians to the anchor, p50/p99/max latency over all measured requests,
gateway CPU per event, load and steal before/after.
"""

from __future__ import annotations

import argparse
import asyncio
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

import httpx
import nats
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedNats, nats_server_binary
from agentos_schemas import EVENTS_STREAM, Event, codec, event_subject, new_event_id
from agentos_schemas.events.ingress import TicketReceived

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "bench-key-not-secret"
CONCURRENCY = 64
BATCH = 50
STRUCTURED, BATCH_TYPE = "application/cloudevents+json", "application/cloudevents-batch+json"
HTTPX_SHARE = 5  # the httpx side sends N/5 events (it is ~10x slower)
TARGET_RATIO = 1 / 3
CONTENDED_PCT = 10.0  # % of all CPUs used by processes other than this run's
FULL = {"n": 5000, "reps": 5, "warmup": 500}
SMOKE = {"n": 300, "reps": 2, "warmup": 50}


# -- the gateway process ----------------------------------------------------------------------
async def serve(nats_url: str, port: int, reuse_port: bool) -> None:
    from agentos_gateway import Gateway, GatewayServer, GatewaySettings, build_app, hash_key
    from agentos_gateway.fastpath import with_fast_path

    bus = await Bus.connect(KernelSettings(nats_url=nats_url), source="gateway")
    await bus.provision()
    settings = GatewaySettings.model_validate(
        {
            "api_keys": [
                {
                    "name": "bench",
                    "sha256": hash_key(KEY),
                    "roles": ["admin"],
                    "rate_per_s": 1e9,
                    "burst": 1_000_000_000,
                }
            ],
            "webhooks": {"bench": {"secrets": [SECRET], "mapping": "cloudevent"}},
        }
    )
    gw = await Gateway(bus, settings).start()
    # With --workers N: N such processes bound to one port with SO_REUSEPORT, as the gateway
    # service runs them with AGENTOS_GATEWAY_WORKERS=N.
    app = with_floors(with_fast_path(build_app(gw)), bus)
    server = await GatewayServer(app, port=port, reuse_port=reuse_port, fast_path=False).start()
    print(server.url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await server.stop()
    await gw.drain()
    await bus.close()


def with_floors(app: Any, bus: Bus) -> Any:
    """``app`` plus the bench-only ``/floor/publish`` and ``/floor/sealed`` routes (module docs)."""

    async def floors(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in ("/floor/publish", "/floor/sealed"):
            await app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        event = codec.decode(body)
        if path == "/floor/sealed":
            await bus.publish(event)
        else:
            await bus.publish_raw(event_subject(event.tenant, event.type), body, codec.headers_for(event))
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})

    return floors


# -- machine, load, statistics ----------------------------------------------------------------
def snapshot(pids: list[int]) -> dict[str, Any]:
    """Load, machine CPU ticks, and the CPU seconds used by this run's processes (this one included)."""
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    own = sum(proc_cpu_s(pid) for pid in [os.getpid(), *pids])
    return {"load": Path("/proc/loadavg").read_text().split()[:3], "cpu": cpu, "own_s": own}


def env(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Steal, and the CPU other processes used meanwhile (a contended run is flagged)."""
    delta = [b - a for a, b in zip(before["cpu"], after["cpu"], strict=False)]
    total = max(1, sum(delta[:8]))
    steal = 100.0 * delta[7] / total
    busy = total - delta[3] - delta[4] - delta[7]
    own = (after["own_s"] - before["own_s"]) * os.sysconf("SC_CLK_TCK")
    other = max(0.0, 100.0 * (busy - own) / total)
    return {
        "load_before": before["load"],
        "load_after": after["load"],
        "steal_pct": round(steal, 3),
        "steal_flag": steal > 2.0,
        "other_cpu_pct": round(other, 1),
        "contended_flag": other > CONTENDED_PCT,
    }


def versions() -> dict[str, str]:
    out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=False)
    pkgs = (
        "nats-py",
        "fastapi",
        "starlette",
        "uvicorn",
        "httptools",
        "httpx",
        "standardwebhooks",
        "msgspec",
        "pydantic",
        "cloudevents",
    )
    return {
        "python": platform.python_version(),
        "nats-server": out.stdout.strip(),
        "event_loop": "asyncio (no uvloop) in all three processes",
        **{p: metadata.version(p) for p in pkgs},
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
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release()}


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, max(0, int(q * len(xs) + 0.999999) - 1))]


def latency(ms: list[float]) -> dict[str, float]:
    xs = sorted(ms)
    return {
        "n": len(xs),
        "p50_ms": round(pct(xs, 0.5), 3),
        "p99_ms": round(pct(xs, 0.99), 3),
        "max_ms": round(xs[-1], 3),
    }


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- load -----------------------------------------------------------------------------------------
REQUESTERS = 50


def events_for(tenant: str, n: int) -> list[Event[Any]]:
    # Tickets from REQUESTERS people: their personal fields are sealed with the requester's key
    # (crypto-shredding), created once per requester, as in a help desk with repeat customers.
    pad = "x" * 700  # ~1 KiB encoded
    datas = [
        TicketReceived(
            system="bench",
            ticket_id=str(i),
            subject="Benchmark",
            description=pad,
            requester_id=f"requester-{i % REQUESTERS}",
        )
        for i in range(n)
    ]
    return [Event(data=d, source="bench", type=d.ce_type(), tenant=tenant) for d in datas]


async def drive(n: int, send: Any, conns: list[Any] | None = None) -> tuple[float, list[float]]:
    """Run ``send(i, conn)`` for i < n with CONCURRENCY in flight (worker k owns ``conns[k]``)."""
    lat: list[float] = []
    counter = iter(range(n))

    async def worker(conn: Any) -> None:
        for i in counter:
            t = time.perf_counter()
            await send(i, conn)
            lat.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(conns[k] if conns else None) for k in range(CONCURRENCY)))
    return n / (time.perf_counter() - t0), lat


class RawHttp:
    """One keep-alive HTTP/1.1 connection with a minimal client: httpx costs 1.5-3 ms of CPU per
    request on this machine, so with it the load generator, not the gateway, would be measured."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: Any = None
        self.writer: Any = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}Content-Length: {len(body)}\r\n\r\n").encode()
        for attempt in (0, 1):  # a connection the server closed while idle: reconnect once
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(request + body)
            try:
                lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                self.writer.close()
                self.writer = None
                if attempt:
                    raise
        length = next((int(ln.split(b":")[1]) for ln in lines if ln.lower().startswith(b"content-length:")), 0)
        return int(lines[0].split()[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def anchor_rep(js: Any, tenant: str, n: int) -> tuple[float, list[float]]:
    prepared = [(event_subject(e.tenant, e.type), codec.encode(e), codec.headers_for(e)) for e in events_for(tenant, n)]

    async def send(i: int, _: Any) -> None:
        subject, body, headers = prepared[i]
        await js.publish(subject, body, headers=headers, timeout=10)

    return await drive(n, send)


def requests_for(side: str, tenant: str, n: int) -> tuple[str, list[bytes], list[dict[str, str]]]:
    from agentos_gateway.webhooks import sign

    bodies = [codec.encode(e) for e in events_for(tenant, n)]
    if side == "events":
        return "/events", bodies, [{"content-type": STRUCTURED, "authorization": f"Bearer {KEY}"}] * n
    if side.startswith("floor_"):
        return f"/floor/{side.removeprefix('floor_')}", bodies, [{"content-type": STRUCTURED}] * n
    ctype = STRUCTURED
    if side == "webhook_batch":
        bodies, ctype = [b"[" + b",".join(bodies[i : i + BATCH]) + b"]" for i in range(0, n, BATCH)], BATCH_TYPE
    return (
        "/webhooks/bench",
        bodies,
        [sign(SECRET, f"msg_{new_event_id()}", b) | {"content-type": ctype} for b in bodies],
    )


async def http_rep(conns: list[RawHttp], side: str, tenant: str, n: int) -> tuple[float, list[float]]:
    path, bodies, headers = requests_for(side, tenant, n)

    async def send(i: int, conn: RawHttp) -> None:
        status, body = await conn.post(path, bodies[i], headers[i])
        if status != 202:
            raise RuntimeError(f"{side}: {status} {body[:300]!r}")

    rate, lat = await drive(len(bodies), send, conns)
    return rate * n / len(bodies), lat  # events/s


async def httpx_rep(http: httpx.AsyncClient, tenant: str, n: int) -> tuple[float, list[float]]:
    path, bodies, headers = requests_for("webhook", tenant, n)

    async def send(i: int, _: Any) -> None:
        try:
            resp = await http.post(path, content=bodies[i], headers=headers[i])
        except (httpx.ReadError, httpx.RemoteProtocolError):  # a keep-alive connection closed under us
            resp = await http.post(path, content=bodies[i], headers=headers[i])
        if resp.status_code != 202:
            raise RuntimeError(f"webhook_httpx: {resp.status_code} {resp.text[:300]}")

    return await drive(n, send)


async def stored(js: Any, tenant: str) -> int:
    info = await js.stream_info(EVENTS_STREAM, subjects_filter=f"agentos.{tenant}.>")
    return sum((info.state.subjects or {}).values())


# -- the run ------------------------------------------------------------------------------------
SIDES = ("anchor", "webhook", "events", "webhook_batch", "webhook_httpx", "floor_publish", "floor_sealed")
NAMES = {
    "anchor": "JetStream publish, awaited (anchor)",
    "webhook": "POST /webhooks (signed CE)",
    "floor_publish": "floor: HTTP + decode/validate + publish",
    "floor_sealed": "floor: the same + redact/seal",
    "events": "POST /events (structured, API key)",
    "webhook_batch": f"POST /webhooks (signed batch of {BATCH})",
    "webhook_httpx": "POST /webhooks (signed CE), httpx client",
}


async def run(sizes: dict[str, int], mode: str, workers: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="agentos-bench-gateway-"))
    server = EmbeddedNats(root / "nats", sync="default")
    url = server.start()
    procs: list[subprocess.Popen[str]] = []
    try:
        base, port = "", 0
        for _ in range(workers):
            reuse = ["--reuse"] if workers > 1 else []
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve", url, "--port", str(port), *reuse],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            base = (procs[-1].stdout.readline() if procs[-1].stdout else "").strip()
            if not base.startswith("http"):
                raise RuntimeError("the gateway process did not start")
            port = int(base.rsplit(":", 1)[1])
        pids = [p.pid for p in procs] + ([server.proc.pid] if server.proc else [])
        return await measure(url, base, pids, workers, sizes, mode)
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=20)
        server.stop()


async def measure(
    url: str,
    base: str,
    pids: list[int],
    workers: int,
    sizes: dict[str, int],
    mode: str,
) -> dict[str, Any]:
    gateway = pids[:workers]
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=10)
    samples: dict[str, dict[str, list[float]]] = {s: {"rate": [], "lat": [], "cpu": []} for s in SIDES}
    host, port = base.removeprefix("http://").split(":")
    conns = [RawHttp(host, int(port)) for _ in range(CONCURRENCY)]
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        runners = {"anchor": lambda t, n: anchor_rep(js, t, n), "webhook_httpx": lambda t, n: httpx_rep(http, t, n)}
        for side in ("webhook", "events", "webhook_batch", "floor_publish", "floor_sealed"):
            runners[side] = lambda t, n, side=side: http_rep(conns, side, t, n)
        for side in SIDES:  # warm-up, not recorded
            await runners[side](f"w{side[:2]}{new_event_id()[-8:]}", sizes["warmup"])
        before = snapshot(pids)
        for rep in range(sizes["reps"]):
            for side in SIDES:
                await one_rep(js, runners[side], side, rep, sizes["n"], gateway, samples[side])
        after = snapshot(pids)
    await asyncio.gather(*(c.close() for c in conns))
    await nc.close()
    return summarize(samples, sizes, mode, env(before, after)) | {"gateway_processes": workers}


async def one_rep(
    js: Any, runner: Any, side: str, rep: int, n: int, gateway: list[int], out: dict[str, list[float]]
) -> None:
    n = n // HTTPX_SHARE if side == "webhook_httpx" else n
    tenant = f"r{rep}{side[:2]}{new_event_id()[-8:]}"
    c0 = sum(proc_cpu_s(pid) for pid in gateway)
    rate, lat = await runner(tenant, n)
    out["cpu"].append(1e6 * (sum(proc_cpu_s(pid) for pid in gateway) - c0) / n)
    got = await stored(js, tenant)
    if got != n:
        raise RuntimeError(f"{side} rep {rep}: {got} stored of {n}")
    out["rate"].append(rate)
    out["lat"].extend(lat)


def summarize(
    samples: dict[str, dict[str, list[float]]], sizes: dict[str, int], mode: str, run_env: dict[str, Any]
) -> dict[str, Any]:
    anchor = samples["anchor"]["rate"]
    sides = {}
    for side in SIDES:
        xs = samples[side]["rate"]
        sides[side] = {
            "events_per_s": {"median": round(statistics.median(xs)), "min": round(min(xs)), "max": round(max(xs))},
            "ratio_to_anchor": round(statistics.median(xs) / statistics.median(anchor), 3),
            "pair_ratios": [round(x / a, 3) for x, a in zip(xs, anchor, strict=True)],
            "latency": latency(samples[side]["lat"]),
        }
        if side != "anchor":
            sides[side]["gateway_cpu_us_per_event"] = round(statistics.median(samples[side]["cpu"]), 1)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "mode": mode,
        "machine": machine(),
        "versions": versions(),
        "env": run_env,
        "sizes": sizes,
        "concurrency": CONCURRENCY,
        "batch": BATCH,
        "fsync": "default (lazy), file storage",
        "target_ratio": round(TARGET_RATIO, 3),
        "sides": sides,
        "target_met": sides["webhook"]["ratio_to_anchor"] >= TARGET_RATIO,
        "target_met_batch": sides["webhook_batch"]["ratio_to_anchor"] >= TARGET_RATIO,
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        "| side | events/s median (min–max) | ratio to anchor | p50 ms | p99 ms | max ms | gateway CPU µs/event |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, s in result["sides"].items():
        r, lat = s["events_per_s"], s["latency"]
        rows.append(
            f"| {NAMES[side]} | {r['median']} ({r['min']}–{r['max']}) | {s['ratio_to_anchor']} | "
            f"{lat['p50_ms']} | {lat['p99_ms']} | {lat['max_ms']} |"
            f" {s.get('gateway_cpu_us_per_event', '–')} |"
        )
    e, met = result["env"], {True: "met", False: "NOT met"}
    rows.append(
        f"\nload {e['load_before']} → {e['load_after']}, steal {e['steal_pct']}%"
        f"{' (DISCARD: steal > 2%)' if e['steal_flag'] else ''}, other processes used"
        f" {e['other_cpu_pct']}% of the CPUs{' (CONTENDED)' if e['contended_flag'] else ''};"
        f" target ≥ {result['target_ratio']} of the anchor: {met[result['target_met']]} per request,"
        f" {met[result['target_met_batch']]} in batch mode"
    )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes: proves the script works (< 30 s)")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway processes sharing the port with SO_REUSEPORT (as AGENTOS_GATEWAY_WORKERS)",
    )
    parser.add_argument("--serve", metavar="NATS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--reuse", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port, args.reuse))
        return 0
    result = asyncio.run(run(SMOKE if args.smoke else FULL, "smoke" if args.smoke else "full", args.workers))
    return report(result, args.out, table(result))


def report(result: dict[str, Any], out: Path | None, table_text: str) -> int:
    """Write ``result`` as JSON to ``out`` (if given), print its header and ``table_text``."""
    if out:
        out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("date", "mode", "versions", "machine")}, indent=2))
    print(table_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
