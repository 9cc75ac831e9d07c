"""`agentos up` as a user runs it: a real process, embedded servers, Ctrl-C, restart, bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.connected  # starts servers of its own

AGENTOS = str(Path(sys.executable).parent / "agentos")


def env_for(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env.update({"AGENTOS_STATE_DIR": str(state), "AGENTOS_NATS_SYNC": "default", **extra})
    return env


@pytest.mark.parametrize(
    ("var", "url", "names"),
    [
        ("AGENTOS_NATS_URL", "nats://127.0.0.1:1", "NATS"),
        ("AGENTOS_DATABASE_URL", "postgresql://agentos@127.0.0.1:1/agentos", "Postgres"),
    ],
)
def test_unreachable_configured_server_is_one_clear_line(tmp_path: Path, var: str, url: str, names: str) -> None:
    result = subprocess.run(
        [AGENTOS, "up"], env=env_for(tmp_path, **{var: url}), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert names in lines[0] and url in lines[0] and var in lines[0]


def wait_runtime(state: Path, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return dict(json.loads((state / "runtime.json").read_text()))
        except (OSError, ValueError):
            time.sleep(0.2)
    raise AssertionError("agentos up did not write runtime.json")


def status(state: Path) -> dict[str, object]:
    """`agentos status --json` (exit 1, a problem found, is an answer too)."""
    out = subprocess.run([AGENTOS, "status", "--json"], env=env_for(state), capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 1), out.stdout[-2000:] + out.stderr[-2000:]
    return dict(json.loads(out.stdout))


def wait_services(state: Path, count: int, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = status(state)
        if len({s["service"] for s in report["services"]}) >= count:  # type: ignore[index]
            return report
        time.sleep(0.5)
    raise AssertionError("services did not report healthy")


def test_up_runs_everything_stops_cleanly_and_restarts_with_its_state(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [AGENTOS, "up", "--services", "memory,context-manager"],
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        info = wait_runtime(tmp_path)
        assert str(info["nats_url"]).startswith("nats://127.0.0.1:")
        wait_services(tmp_path, 2)
        subprocess.run(
            [AGENTOS, "submit", "--no-watch", "kept across restarts"],
            env=env_for(tmp_path),
            check=True,
            timeout=60,
            capture_output=True,
        )
        report = status(tmp_path)
        streams = {s["stream"]: s for s in report["streams"]}  # type: ignore[union-attr]
        assert {"AGENTOS_EVENTS", "AGENTOS_DLQ"} <= set(streams)
        before = streams["AGENTOS_EVENTS"]["messages"]  # type: ignore[index]
        assert before >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert not (tmp_path / "runtime.json").exists()
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "no server or service outlives `agentos up`"

    again = subprocess.Popen(
        [AGENTOS, "up", "--services", ""],
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_runtime(tmp_path)
        streams = {s["stream"]: s for s in status(tmp_path)["streams"]}  # type: ignore[union-attr]
        assert streams["AGENTOS_EVENTS"]["messages"] >= before, "the log survived the restart"  # type: ignore[index]
    finally:
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=60)
    assert again.returncode == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_up_leaves_nothing_behind(tmp_path: Path) -> None:
    first = subprocess.Popen(
        [AGENTOS, "up", "--services", "memory"],
        env=env_for(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_runtime(tmp_path)
        services = [int(s["pid"]) for s in wait_services(tmp_path, 1)["services"]]  # type: ignore[index]
        nats_pid = int((tmp_path / "nats" / "nats-server.pid").read_text())
        # A second `up` on the same directory is refused by the lock, even without runtime.json.
        (tmp_path / "runtime.json").rename(tmp_path / "runtime.json.hidden")
        second = subprocess.run(
            [AGENTOS, "up", "--services", ""], env=env_for(tmp_path), capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 2 and "already running" in second.stderr, second.stderr
        assert _alive(nats_pid), "the refused start left the running server alone"
        (tmp_path / "runtime.json.hidden").rename(tmp_path / "runtime.json")
        first.kill()  # SIGKILL: nothing of `agentos up` runs to stop its children
        first.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in services) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in services), "services stop when agentos up is gone"
        assert _alive(nats_pid)  # the server outlives it, until the next start
    finally:
        if first.poll() is None:
            first.kill()
    again = subprocess.Popen(
        [AGENTOS, "up", "--services", ""],
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while wait_runtime(tmp_path).get("pid") != again.pid:  # the killed run's file names a dead pid
            assert time.monotonic() < deadline, "the second agentos up did not start"
            time.sleep(0.2)
        assert not _alive(nats_pid), "the next start stopped the server left on its store"
    finally:
        again.send_signal(signal.SIGINT)
        out, _ = again.communicate(timeout=60)
    assert again.returncode == 0, out
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "no server outlives the second `agentos up`, Postgres included"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["watch", "not-a-goal"], "no goal 'not-a-goal'"),
        (["submit", ""], "the goal is empty"),
        (["submit", "   "], "the goal is empty"),
        (["audit", "query", "--type", "nosuch.type"], "'nosuch.type' is not in the catalogue"),
        (["audit", "export", "--since", "1h", "--out", "/nonexistent/dir/x.jsonl"], "/nonexistent/dir/x.jsonl"),
        (["send", "no-such-file.json", "--source", "zendesk"], "cannot read 'no-such-file.json'"),
    ],
)
def test_bad_input_gets_one_clear_line(up_servers: Path, args: list[str], says: str) -> None:
    result = subprocess.run([AGENTOS, *args], env=env_for(up_servers), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], lines


@pytest.fixture(scope="module")
def up_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`agentos up` with its servers and no service, for commands that need a running AgentOS."""
    state = tmp_path_factory.mktemp("up-servers")
    proc = subprocess.Popen(
        [AGENTOS, "up", "--services", ""], env=env_for(state), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_runtime(state)
        yield state
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
