"""The kill-switch benchmark script runs (smoke size) and meets its latency target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.bench
def test_bench_killswitch_smoke(tmp_path: Path) -> None:
    out = tmp_path / "ks.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_killswitch.py"),
            "--smoke",
            "--replicas",
            "2",
            "--out",
            str(out),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    result = json.loads(out.read_text())
    assert result["observed_by_every_replica"]["n"] == result["iterations"]
    assert result["cancelled_on_every_replica"]["p50_ms"] < 100
