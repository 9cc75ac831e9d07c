"""The event-id claim benchmark runs end to end at smoke size (speed is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.bench
def test_bench_event_ids_smoke_writes_its_report(tmp_path: Path) -> None:
    result, proc = run_smoke("bench_event_ids.py", tmp_path, timeout=300)
    assert result["mode"] == "smoke" and "always" in result["durability"]
    assert set(result["events_per_s"]) == {"raw", "kernel, ids off", "kernel, ids on"}
    assert all(v > 0 for by in result["events_per_s"].values() for v in by.values())
    assert set(result["ratios"]) == {"concurrency 1", "concurrency 16"}
    assert "| side |" in proc.stdout and "Traceback" not in proc.stderr
