"""`agentos status` is not healthy while a service the runtime here runs reports nothing (crashed,
restarting, stuck starting): the `agentos up` of the state directory names its services in
runtime.json, and each one that no instance reports for is a PROBLEM (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agentos_kernel import KernelSettings


def status(state: Path, services: list[str], settings: KernelSettings) -> subprocess.CompletedProcess[str]:
    runtime = {
        "pid": os.getpid(),
        "nats_url": settings.nats_url,
        "database_url": settings.database_url,
        "services": services,
    }
    (state / "runtime.json").write_text(json.dumps(runtime))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    return subprocess.run(
        [sys.executable, "-m", "agentos_cli", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "AGENTOS_STATE_DIR": str(state)},
    )


def test_a_service_of_the_runtime_that_reports_nothing_is_a_problem(tmp_path: Path, settings: KernelSettings) -> None:
    missing = status(tmp_path, ["ledger-that-never-started"], settings)
    assert missing.returncode == 1, missing.stderr
    problems = json.loads(missing.stdout)["problems"]
    assert any(p.startswith("service ledger-that-never-started is not reporting") for p in problems), problems

    none_expected = status(tmp_path, [], settings)
    assert not any("is not reporting" in p for p in json.loads(none_expected.stdout)["problems"])
