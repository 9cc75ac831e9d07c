"""The policy benchmark runs end to end at smoke sizes (it proves the script works; speed is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.bench
def test_bench_policy_smoke_writes_its_report(tmp_path: Path) -> None:
    result, proc = run_smoke("bench_policy.py", tmp_path, timeout=120)
    assert result["mode"] == "smoke"
    assert {"nproc", "cpu_model", "memory_gib"} <= result["machine"].keys()
    assert {"python", "nats-server", "nats-py", "pydantic"} <= result["versions"].keys()
    assert {"load_before", "load_after", "steal_pct", "steal_flag"} <= result["env"].keys()
    for side in ("raw", "decision", "model_call_with_reservation"):
        assert result[side]["n"] > 0 and {"p50_ms", "p99_ms", "max_ms"} <= result[side].keys()
    assert {"raw_req_per_s", "decisions_per_s"} <= result["throughput"].keys()
    assert isinstance(result["p50_added_ms"], float) and "target_met" in result
    assert "| measure |" in proc.stdout and "Traceback" not in proc.stderr
