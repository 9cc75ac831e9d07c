"""Running a benchmark script at smoke size, as CI does (it proves the script works; speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_smoke(
    script: str,
    tmp_path: Path,
    *,
    timeout: float,
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run ``benchmarks/<script> --smoke``; returns its JSON report and the finished process."""
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return dict(json.loads(out.read_text())), proc
