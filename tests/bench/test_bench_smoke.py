"""The bus benchmark runs end to end at smoke sizes (it proves the script works; speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_bus.py"


@pytest.mark.bench
def test_bench_bus_smoke_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "bus.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert {
        "date",
        "mode",
        "machine",
        "versions",
        "env",
        "targets",
        "publish",
        "hop",
        "table",
        "all_targets_met",
    } <= result.keys()
    assert result["mode"] == "smoke"
    assert {"nproc", "cpu_model", "memory_gib"} <= result["machine"].keys()
    assert {"python", "nats-server", "nats-py", "msgspec", "pydantic"} <= result["versions"].keys()
    assert {"load_before", "load_after", "steal_pct", "steal_flag"} <= result["env"].keys()
    assert set(result["publish"]) == {"always", "default"}
    for mode in result["publish"].values():
        assert {"raw_msgs_per_s", "kernel_msgs_per_s", "ratio", "pair_ratios", "pass", "env"} <= mode.keys()
        assert {"median", "min", "max"} <= mode["raw_msgs_per_s"].keys()
    hop = result["hop"]
    assert hop["fsync"] == "always"
    assert {"raw", "kernel", "p50_ratio", "p99_ratio", "p50_pass", "p99_pass", "sparse"} <= hop.keys()
    for side in ("raw", "kernel"):
        assert {"n", "p50_ms", "p99_ms", "max_ms"} <= hop[side].keys()
        assert hop[side]["n"] > 0
    assert "Traceback" not in proc.stderr
    assert "| measure |" in proc.stdout
