"""CLI start-up: how long `agentos <command>` takes before it does anything, next to a bare Python.

    python benchmarks/bench_cli_startup.py [--smoke] [--rounds N] [--out FILE.json]

Method (/work/shared/BENCHMARKING.md): every measure is a fresh process, run in interleaved
rounds (anchor, then each candidate, per round) so load changes hit all alike.

"Before it does anything" is measured as the time from starting the process to its first
connection to NATS: the benchmark listens on a free loopback port that stands in for NATS
(``AGENTOS_NATS_URL`` points there), records when each command connects, and then ends the
process. Everything a command imports, parses and resolves before it reaches the bus is inside
that time, nothing of the network's or the services' is. The anchor is a bare Python that opens
the same connection (``python -c "import socket; socket.create_connection(...)"``). Also timed to
exit: ``import`` (``python -c "import agentos_cli.main"``, what every command pays to be parsed)
and ``--help``.

Reported per measure: p50 and max wall time, and the ratio of p50 wall to the anchor's. Target:
each of ``status``, ``approvals``, ``budget`` and ``tail`` reaches NATS in < 0.4 s (p50 wall).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

FULL = {"rounds": 15, "warmup": 2}
SMOKE = {"rounds": 1, "warmup": 0}
TARGET_S = 0.4
COMMANDS = ("status", "approvals", "budget", "tail")


class StandIn:
    """A loopback listener standing in for NATS: records when each connection arrives."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(60)

    def wait(self) -> float:
        """perf_counter time of the next connection (which it then drops)."""
        conn, _ = self.sock.accept()
        at = time.perf_counter()
        conn.close()
        return at


def measures(state: Path, port: int) -> dict[str, tuple[list[str], dict[str, str], bool]]:
    """name -> (argv, env, whether it is timed to its connection rather than to its exit)."""
    py = sys.executable
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    here = {**base, "AGENTOS_STATE_DIR": str(state), "AGENTOS_NATS_URL": f"nats://127.0.0.1:{port}"}
    out: dict[str, tuple[list[str], dict[str, str], bool]] = {
        "anchor": ([py, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port})).recv(1)"], base, True),
        "import": ([py, "-c", "import agentos_cli.main"], base, False),
        "--help": ([py, "-m", "agentos_cli", "--help"], base, False),
    }
    for command in COMMANDS:
        out[command] = ([py, "-m", "agentos_cli", command], here, True)
    return out


def once(argv: list[str], env: dict[str, str], to_connect: bool, stand_in: StandIn) -> float:
    """Wall seconds of one run, to its connection or to its (successful) exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if to_connect:
            return stand_in.wait() - start
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"{argv[1:]} exited {proc.returncode}: {err[-500:]}")
        return time.perf_counter() - start
    finally:
        proc.kill()
        proc.communicate()


def run(smoke: bool, rounds: int | None = None) -> dict[str, Any]:
    sizes = {**(SMOKE if smoke else FULL), **({"rounds": rounds} if rounds else {})}
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    stand_in = StandIn()
    with tempfile.TemporaryDirectory(prefix="agentos-bench-cli-") as tmp:
        plan = measures(Path(tmp), stand_in.port)
        samples: dict[str, list[float]] = {name: [] for name in plan}
        for i in range(sizes["warmup"] + sizes["rounds"]):
            for name, (argv, env, to_connect) in plan.items():
                sample = once(argv, env, to_connect, stand_in)
                if i >= sizes["warmup"]:
                    samples[name].append(sample)
    stand_in.sock.close()
    anchor = statistics.median(samples["anchor"])
    result: dict[str, Any] = {
        "mode": "smoke" if smoke else "full",
        "machine": machine(),
        "versions": versions(),
        "env": {"load_before": load_before, "load_after": Path("/proc/loadavg").read_text().split()[:3]},
        "rounds": sizes["rounds"],
        "target_s": TARGET_S,
        "measures": {},
    }
    for name, xs in samples.items():
        walls = sorted(xs)
        p50 = statistics.median(walls)
        result["measures"][name] = {
            "n": len(xs),
            "p50_s": round(p50, 4),
            "max_s": round(walls[-1], 4),
            "to": "connection" if plan[name][2] else "exit",
            "ratio_to_anchor": round(p50 / anchor, 2),
        }
    result["target_met"] = all(result["measures"][c]["p50_s"] < TARGET_S for c in COMMANDS)
    return result


def machine() -> dict[str, Any]:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return {"nproc": os.cpu_count(), "cpu_model": model}


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        **{p: metadata.version(p) for p in ("typer", "rich", "nats-py", "pydantic")},
    }


def table(r: dict[str, Any]) -> str:
    lines = ["| measure | timed to | p50 wall | max wall | × anchor |", "|---|---|---|---|---|"]
    for name, m in r["measures"].items():
        lines.append(
            f"| {name} | {m['to']} | {m['p50_s'] * 1000:.0f} ms | {m['max_s'] * 1000:.0f} ms | {m['ratio_to_anchor']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, proves the script works")
    parser.add_argument("--rounds", type=int, help="rounds to time (default 15; smoke 1)")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args()
    result = run(args.smoke, args.rounds)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    env = result["env"]
    print(
        f"\nenv: load {env['load_before']} -> {env['load_after']}; target (< {TARGET_S} s p50 for "
        f"{', '.join(COMMANDS)}) met: {result['target_met']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
