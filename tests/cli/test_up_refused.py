"""A refused second start on a live state directory changes nothing of the running runtime."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_up import AGENTOS, env_for, status, wait_runtime

pytestmark = pytest.mark.connected  # starts servers of its own


@pytest.mark.parametrize("second", [["up", "--services", ""], ["demo", "--timeout", "5"]])
def test_a_refused_start_leaves_the_running_runtime_reachable(tmp_path: Path, second: list[str]) -> None:
    first = subprocess.Popen(
        [AGENTOS, "up", "--services", ""], env=env_for(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_runtime(tmp_path)
        before = (tmp_path / "runtime.json").read_bytes()
        refused = subprocess.run([AGENTOS, *second], env=env_for(tmp_path), capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "already running" in refused.stderr, refused.stderr + refused.stdout
        assert (tmp_path / "runtime.json").read_bytes() == before, "the refused start left runtime.json alone"
        streams = {s["stream"] for s in status(tmp_path)["streams"]}  # type: ignore[union-attr]
        assert "AGENTOS_EVENTS" in streams, "later commands still reach the running runtime"
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
    assert first.returncode == 0
    assert not (tmp_path / "runtime.json").exists(), "the runtime that wrote it removes it on its way out"
