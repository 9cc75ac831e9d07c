"""The goal-execution benchmark runs end to end at smoke sizes (it proves the script works; speed is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.bench
def test_bench_goals_smoke_writes_its_report(tmp_path: Path) -> None:
    result, proc = run_smoke("bench_goals.py", tmp_path, timeout=180)
    assert {
        "date",
        "mode",
        "machine",
        "versions",
        "env",
        "fsync",
        "services",
        "targets",
        "a",
        "b",
        "c",
        "table",
        "targets_met",
        "all_targets_met",
        "goals_failed",
    } <= result.keys()
    assert result["mode"] == "smoke"
    assert result["fsync"] == "always"
    assert result["goals_failed"] == []
    assert {"nproc", "cpu_model", "memory_gib"} <= result["machine"].keys()
    assert {"python", "nats-server", "nats-py", "litellm", "langgraph"} <= result["versions"].keys()
    assert {"load_before", "load_after", "steal_pct", "steal_flag"} <= result["env"].keys()
    a = result["a"]
    assert {"hop", "agentos", "langgraph", "step_pass", "fixed_pass", "breakdown", "env"} <= a.keys()
    assert a["hop"]["n"] > 0 and a["hop"]["p50_ms"] > 0
    assert a["agentos"]["client_ms"]["T_ms"]["3"]["n"] > 0
    assert a["breakdown"]["per_step"]
    for run in result["b"].values():
        assert {"goals_per_s", "steps_per_s", "latency", "cpu_ms_per_step", "env"} <= run.keys()
        assert run["goals"] > 0 and run["failed"] == 0
    c = result["c"]
    assert {
        "throughput_vs_ideal",
        "p99_over_p50",
        "services_cpu_cores",
        "cpu_cores",
        "throughput_pass",
        "tail_pass",
        "cpu_pass",
    } <= c.keys()
    assert c["goals"] > 0
    assert set(result["targets_met"]) == {
        "a_step_vs_hop",
        "a_fixed_vs_langgraph",
        "c_throughput",
        "c_tail",
        "c_services_cpu",
    }
    assert "Traceback" not in proc.stderr
    assert "| a. one goal in flight" in proc.stdout
