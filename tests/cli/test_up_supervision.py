"""`agentos up` supervises the embedded servers it started: a nats-server or Postgres killed with
SIGKILL is started again on the same store, the services carry on, and nothing was lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.test_up import AGENTOS, _alive, env_for, status, wait_runtime, wait_services

pytestmark = pytest.mark.connected  # starts servers of its own


def _pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def _restarted(path: Path, old: int, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = _pid(path)
        except (OSError, ValueError, IndexError):
            pid = old
        if pid != old and _alive(pid):
            return pid
        time.sleep(0.3)
    raise AssertionError(f"no new server in {path} within {timeout}s")


def _settled(state: Path, timeout: float = 120.0) -> dict[str, object]:
    """`agentos status` exits 0: dependencies reachable, the projection caught up, services ok."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = subprocess.run(
            [AGENTOS, "status", "--json"], env=env_for(state), capture_output=True, text=True, timeout=120
        )
        if last.returncode == 0:
            return dict(json.loads(last.stdout))
        time.sleep(1.0)
    raise AssertionError(f"status did not settle: {last and (last.stdout[-2000:] + last.stderr)}")


def _caught_up(state: Path, timeout: float = 90.0) -> dict[str, object]:
    """A healthy status whose audit projection has reached the log's last event (status itself
    tolerates a lag below --max-lag, so a healthy answer may come a moment before that)."""
    deadline = time.monotonic() + timeout
    while True:
        report = _settled(state)
        (log_,) = [s for s in report["streams"] if s["stream"] == "AGENTOS_EVENTS"]  # type: ignore[union-attr]
        (projection,) = report["projections"]  # type: ignore[misc]
        if projection["head_seq"] == log_["last_seq"] or time.monotonic() > deadline:  # type: ignore[index]
            return report
        time.sleep(1.0)


def test_a_killed_embedded_server_is_started_again(tmp_path: Path) -> None:
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [AGENTOS, "up", "--services", "audit"], env=env_for(tmp_path), stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_runtime(tmp_path)
        wait_services(tmp_path, 1)
        submit = [AGENTOS, "submit", "--no-watch", "recorded before the faults"]
        subprocess.run(submit, env=env_for(tmp_path), check=True, timeout=120, capture_output=True)
        before = _settled(tmp_path)
        (events,) = [s for s in before["streams"] if s["stream"] == "AGENTOS_EVENTS"]  # type: ignore[union-attr]

        nats_pid = _pid(tmp_path / "nats" / "nats-server.pid")
        os.kill(nats_pid, signal.SIGKILL)
        _restarted(tmp_path / "nats" / "nats-server.pid", nats_pid)
        pg_pid = _pid(tmp_path / "postgres" / "pgdata" / "postmaster.pid")
        os.kill(pg_pid, signal.SIGKILL)
        _restarted(tmp_path / "postgres" / "pgdata" / "postmaster.pid", pg_pid)

        subprocess.run(
            [*submit[:-1], "recorded after the faults"],
            env=env_for(tmp_path),
            check=True,
            timeout=120,
            capture_output=True,
        )
        after = _caught_up(tmp_path)
        (now,) = [s for s in after["streams"] if s["stream"] == "AGENTOS_EVENTS"]  # type: ignore[union-attr]
        assert now["last_seq"] > events["last_seq"], "the log kept what it had and took new events"  # type: ignore[index]
        (projection,) = after["projections"]  # type: ignore[misc]
        assert projection["head_seq"] == now["last_seq"], "the audit projection caught up across both restarts"  # type: ignore[index]
        assert {d["dependency"]: d["ok"] for d in after["dependencies"]} == {"NATS": True, "Postgres": True}  # type: ignore[union-attr]
        assert status(tmp_path)["services"], "the audit service reports again"
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
        log.close()
    out = (tmp_path / "up.log").read_text()
    assert "starting it again" in out, out[-3000:]
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "no server outlives `agentos up`, restarted ones included"
