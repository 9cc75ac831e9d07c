"""The gateway benchmark runs end to end at smoke sizes (proves the script works; speed is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.bench
def test_bench_gateway_smoke_writes_its_report(tmp_path: Path) -> None:
    result, proc = run_smoke("bench_gateway.py", tmp_path, timeout=120)
    assert result["mode"] == "smoke" and {"date", "machine", "versions", "env", "sides", "target_met"} <= result.keys()
    assert {"load_before", "load_after", "steal_pct", "steal_flag", "other_cpu_pct"} <= result["env"].keys()
    assert {"python", "nats-server", "uvicorn", "httpx", "standardwebhooks"} <= result["versions"].keys()
    assert set(result["sides"]) == {
        "anchor",
        "webhook",
        "events",
        "webhook_batch",
        "webhook_httpx",
        "floor_publish",
        "floor_sealed",
    }
    for side in result["sides"].values():
        assert side["events_per_s"]["median"] > 0 and side["latency"]["n"] > 0
        assert {"p50_ms", "p99_ms", "max_ms"} <= side["latency"].keys()
    assert "| side |" in proc.stdout and "Traceback" not in proc.stderr
