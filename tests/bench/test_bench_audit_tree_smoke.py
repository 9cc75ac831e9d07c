"""The audit tree benchmark runs end to end at smoke sizes (it proves the script works; speed is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.smoke import run_smoke


@pytest.mark.bench
def test_bench_audit_tree_smoke_writes_its_report(tmp_path: Path) -> None:
    result, proc = run_smoke("bench_audit_tree.py", tmp_path, timeout=240)
    assert (
        result["mode"] == "smoke" and {"machine", "versions", "targets", "proofs", "ingest", "table"} <= result.keys()
    )
    proofs = result["proofs"]
    assert proofs["leaves"] > 0 and proofs["checkpoints"] > 1
    for name in ("anchor", "inclusion", "consistency"):
        assert proofs[name]["n"] > 0 and {"p50_ms", "p95_ms", "p99_ms"} <= proofs[name].keys()
    ingest = result["ingest"]
    assert ingest["tree_off"]["median"] > 0 and ingest["tree_on"]["median"] > 0
    assert {"ingest_ratio", "ingest_pass", "pair_ratios"} <= ingest.keys() and "proof_pass" in proofs
    assert "| ingest events/s" in proc.stdout and "Traceback" not in proc.stderr
