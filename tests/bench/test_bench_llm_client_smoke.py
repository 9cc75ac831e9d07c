"""The model-call client benchmark runs at smoke size: every variant measured on the turn payload,
and the litellm variants (SDK path, own HTTP handler, the kernel's LLM) give the same answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.bench
def test_bench_llm_client_smoke(tmp_path: Path) -> None:
    report, _ = run_smoke("bench_llm_client.py", tmp_path, timeout=240)
    assert set(report["payloads"]) == {"turn"}  # a full run measures "plain" too
    for payload in report["payloads"].values():
        assert set(payload["variants"]) == {"httpx", "litellm_sdk", "litellm_handler", "agentos_llm"}
        assert payload["variants"]["httpx"]["ratio_to_anchor"] == 1.0
        assert all(v["cpu_ms_per_call"] > 0 for v in payload["variants"].values())
        assert payload["litellm_answers_identical"]
    switches = {(s["variant"], s["switch"]) for s in report["samples"]}
    assert ("litellm_sdk", "False") in switches and ("litellm_handler", "True") in switches
