"""CLI start-up: how long `agentos <command>` takes before it does anything, next to a bare Python.

    python benchmarks/bench_cli_startup.py [--smoke] [--rounds N] [--out FILE.json]

Method (/work/shared/BENCHMARKING.md): every measure is a fresh process, run in interleaved
rounds (anchor, then each candidate, per round) so load changes hit all alike. The anchor is
``python -c pass`` with the same interpreter. Candidates:

* ``import``   ``python -c "import agentos_cli.main"`` (what every command pays to be parsed);
* ``--help``   ``python -m agentos_cli --help`` (parse and print, no command body);
* ``status``, ``approvals``, ``budget``, ``tail``: the command with no AgentOS configured and an
  empty state directory, so it imports everything it needs to connect, looks for a runtime, and
  exits at once with "no AgentOS is running here" (exit 2, checked) instead of connecting. That is
  the time before it does anything.

Reported per measure: p50 and max wall time, p50 CPU time (user + system of the child, steadier
than wall time on a shared machine), and the ratio of p50 wall to the anchor's. Target: each of
the four commands starts in < 0.4 s (p50 wall).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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


def measures(state: Path) -> dict[str, tuple[list[str], dict[str, str], int]]:
    """name -> (argv, env, expected exit code)."""
    py = sys.executable
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    nowhere = {**base, "AGENTOS_STATE_DIR": str(state)}
    out: dict[str, tuple[list[str], dict[str, str], int]] = {
        "anchor": ([py, "-c", "pass"], base, 0),
        "import": ([py, "-c", "import agentos_cli.main"], base, 0),
        "--help": ([py, "-m", "agentos_cli", "--help"], base, 0),
    }
    for command in COMMANDS:
        out[command] = ([py, "-m", "agentos_cli", command], nowhere, 2)
    return out


def once(argv: list[str], env: dict[str, str], expected: int) -> tuple[float, float]:
    """(wall s, CPU s) of one run; fails if it did not end as expected."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=120)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != expected or (expected == 2 and "no AgentOS is running here" not in proc.stderr):
        raise SystemExit(f"{argv[1:]} exited {proc.returncode} (expected {expected}): {proc.stderr[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(smoke: bool, rounds: int | None = None) -> dict[str, Any]:
    sizes = {**(SMOKE if smoke else FULL), **({"rounds": rounds} if rounds else {})}
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix="agentos-bench-cli-") as tmp:
        plan = measures(Path(tmp))
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in plan}
        for i in range(sizes["warmup"] + sizes["rounds"]):
            for name, (argv, env, expected) in plan.items():
                sample = once(argv, env, expected)
                if i >= sizes["warmup"]:
                    samples[name].append(sample)
    anchor = statistics.median(w for w, _ in samples["anchor"])
    result: dict[str, Any] = {"mode": "smoke" if smoke else "full", "machine": machine(), "versions": versions(),
                              "env": {"load_before": load_before,
                                      "load_after": Path("/proc/loadavg").read_text().split()[:3]},
                              "rounds": sizes["rounds"], "target_s": TARGET_S, "measures": {}}
    for name, xs in samples.items():
        walls = sorted(w for w, _ in xs)
        p50 = statistics.median(walls)
        result["measures"][name] = {"n": len(xs), "p50_s": round(p50, 4), "max_s": round(walls[-1], 4),
                                    "cpu_p50_s": round(statistics.median(c for _, c in xs), 4),
                                    "ratio_to_anchor": round(p50 / anchor, 2)}
    result["target_met"] = all(result["measures"][c]["p50_s"] < TARGET_S for c in COMMANDS)
    return result


def machine() -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu_model": model}


def versions() -> dict[str, str]:
    return {"python": platform.python_version(),
            **{p: metadata.version(p) for p in ("typer", "rich", "nats-py", "pydantic")}}


def table(r: dict[str, Any]) -> str:
    lines = ["| measure | p50 wall | max wall | p50 CPU | × anchor |", "|---|---|---|---|---|"]
    for name, m in r["measures"].items():
        lines.append(f"| {name} | {m['p50_s'] * 1000:.0f} ms | {m['max_s'] * 1000:.0f} ms | "
                     f"{m['cpu_p50_s'] * 1000:.0f} ms | {m['ratio_to_anchor']} |")
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
    print(f"\nenv: load {env['load_before']} -> {env['load_after']}; target (< {TARGET_S} s p50 for "
          f"{', '.join(COMMANDS)}) met: {result['target_met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
