"""The MCP benchmark runs end to end at smoke sizes (it proves the script works; speed is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.bench
def test_bench_mcp_smoke_writes_its_report(tmp_path: Path) -> None:
    result, proc = run_smoke("bench_mcp.py", tmp_path, timeout=180)
    assert result["mode"] == "smoke"
    for side in ("direct", "governed"):
        assert result[side]["n"] > 0 and {"p50_ms", "p99_ms"} <= result[side].keys()
    assert result["throughput"]["tasks"] == 32 and result["throughput"]["ratio"] > 0
    assert "| measure |" in proc.stdout and "Traceback" not in proc.stderr
