"""The audit benchmark runs end to end at smoke sizes (it proves the script works; speed is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.bench
def test_bench_audit_smoke_writes_its_report(tmp_path: Path) -> None:
    result, proc = run_smoke("bench_audit.py", tmp_path, timeout=180)
    assert result["mode"] == "smoke" and {"machine", "versions", "targets", "log", "queries", "table"} <= result.keys()
    log = result["log"]
    for name in ("raw_ack", "ingest", "raw_pull", "rebuild", "verify"):
        assert log[name]["median"] > 0 and {"min", "max"} <= log[name].keys()
    assert {"ingest_ratio", "rebuild_ratio", "verify_ratio", "ingest_pass", "rebuild_pass"} <= log.keys()
    assert {"steal_pct", "load_before", "load_after"} <= log["env"].keys()
    queries = result["queries"]
    assert queries["rows"] > 0 and queries["trail_of_one_goal"]["n"] > 0 and "p95_ms" in queries["trail_of_one_goal"]
    assert "denied --since 7d" in queries and "cost <goal>" in queries
    assert "| measure |" in proc.stdout and "Traceback" not in proc.stderr
