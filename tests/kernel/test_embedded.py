"""Embedded servers that a killed run left behind: the next start neither shares a JetStream store
with the old nats-server nor leaves the old Postgres running when it stops."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import nats
import psutil
import pytest
from agentos_kernel.embedded import EmbeddedNats, EmbeddedPostgres

pytestmark = pytest.mark.connected  # starts servers of its own

# A run that starts the server, stores one message, and dies without stopping it (as a killed
# `agentos up` does): the server, in its own session, outlives it.
ABANDON = """
import asyncio, sys
from pathlib import Path
import nats
from agentos_kernel.embedded import EmbeddedNats, EmbeddedPostgres

async def main():
    server = EmbeddedNats(Path(sys.argv[1]), sync="always")
    nc = await nats.connect(server.start())
    js = nc.jetstream()
    await js.add_stream(name="KEEP", subjects=["keep.>"])
    await js.publish("keep.one", b"kept")
    await nc.close()

asyncio.run(main())
"""


async def _stored(url: str) -> bytes:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().get_msg("KEEP", 1)).data or b""
    finally:
        await nc.close()


async def test_a_server_left_running_is_stopped_before_a_new_one_uses_its_store(tmp_path: Path) -> None:
    root = tmp_path / "nats"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", ABANDON, str(root)], check=True, timeout=60)
    orphan = psutil.Process(int((root / "nats-server.pid").read_text()))
    assert orphan.is_running() and orphan.status() != psutil.STATUS_ZOMBIE

    server = EmbeddedNats(root, sync="always")
    url = await asyncio.to_thread(server.start)
    try:
        assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE
        assert await _stored(url) == b"kept"  # the store was handed over whole
    finally:
        server.stop()
        if orphan.is_running():  # only when the check above failed
            orphan.kill()


async def test_a_pid_file_naming_another_program_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "nats"
    root.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (root / "nats-server.pid").write_text(str(other.pid))
        server = EmbeddedNats(root, sync="default")
        await asyncio.to_thread(server.start)
        server.stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


# A run that starts Postgres and is killed (no exit handlers run): the server outlives it.
ABANDON_PG = """
import os, sys
from pathlib import Path
from agentos_kernel.embedded import EmbeddedPostgres

EmbeddedPostgres(Path(sys.argv[1])).start()
os._exit(0)
"""


async def test_a_postgres_left_running_is_reused_and_then_stopped(tmp_path: Path) -> None:
    root = tmp_path / "postgres"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", ABANDON_PG, str(root)], check=True, timeout=120)
    left = psutil.Process(int((root / "pgdata" / "postmaster.pid").read_text().split()[0]))
    assert left.is_running()
    server = EmbeddedPostgres(root)
    try:
        await asyncio.to_thread(server.start)
        assert int((root / "pgdata" / "postmaster.pid").read_text().split()[0]) == left.pid  # reused
    finally:
        await asyncio.to_thread(server.stop)
        try:
            assert not left.is_running() or left.status() == psutil.STATUS_ZOMBIE
        finally:
            if left.is_running():  # only when the check above failed
                left.kill()


# A supervisor that starts a child watching it, then dies without stopping it (as a killed
# `agentos up` does); the child marks the file when it has noticed.
ORPHANED_CHILD = """
import os, subprocess, sys
child = '''
import asyncio, os, sys
from agentos_kernel.service import exit_with_parent

async def main():
    stop = asyncio.Event()
    await asyncio.wait_for(exit_with_parent(int(sys.argv[2]), stop, every_s=0.05), 30)
    open(sys.argv[1], "w").write("stopped" if stop.is_set() else "not stopped")

asyncio.run(main())
'''
subprocess.Popen([sys.executable, "-c", child, sys.argv[1], str(os.getpid())])  # as AGENTOS_SUPERVISOR_PID
os._exit(0)
"""


async def test_a_service_stops_when_its_supervisor_is_gone(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", ORPHANED_CHILD, str(marker)], check=True, timeout=30)
    for _ in range(200):
        if marker.exists() and marker.read_text():
            break
        await asyncio.sleep(0.05)
    assert marker.read_text() == "stopped"


async def test_a_service_keeps_running_while_its_supervisor_lives() -> None:
    from agentos_kernel.service import exit_with_parent

    stop = asyncio.Event()
    watch = asyncio.create_task(exit_with_parent(os.getppid(), stop, every_s=0.01))
    await asyncio.sleep(0.2)
    assert not stop.is_set() and not watch.done()
    stop.set()  # a SIGTERM: the watch ends with the service
    await asyncio.wait_for(watch, 1)
