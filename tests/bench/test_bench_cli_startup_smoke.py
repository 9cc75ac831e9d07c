"""The CLI start-up benchmark runs end to end at smoke size (it proves the script works; speed is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.bench
def test_bench_cli_startup_smoke_writes_its_report(tmp_path: Path) -> None:
    result, proc = run_smoke("bench_cli_startup.py", tmp_path, timeout=300)
    assert result["mode"] == "smoke" and {"nproc", "cpu_model"} <= result["machine"].keys()
    assert {"anchor", "import", "--help", "status", "approvals", "budget", "tail"} == result["measures"].keys()
    for m in result["measures"].values():
        assert m["n"] == 1 and m["p50_s"] > 0 and m["ratio_to_anchor"] > 0
    assert result["measures"]["anchor"]["ratio_to_anchor"] == 1.0 and "target_met" in result
    assert "| measure |" in proc.stdout and "Traceback" not in proc.stderr
