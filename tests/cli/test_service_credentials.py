"""`agentos service NAME` next to a local `agentos up` finds that runtime's servers and its own
NATS credentials itself (and says where from); with no runtime it names the variables to set."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from agentos_cli.main import app
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import ADMIN, EmbeddedNats
from agentos_kernel.testing import eventually
from agentos_schemas import subjects
from pydantic import SecretStr
from typer.testing import CliRunner

pytestmark = pytest.mark.connected  # starts servers of its own


def clean_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env["AGENTOS_STATE_DIR"] = str(state)
    return env


def test_without_a_runtime_the_error_names_the_variables(tmp_path: Path) -> None:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("AGENTOS_")}
    result = CliRunner().invoke(app, ["service", "policy"], env={**unset, "AGENTOS_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "AGENTOS_NATS_URL" in message and "AGENTOS_DATABASE_URL" in message, message
    assert str(tmp_path) in message and "agentos up" in message and "Traceback" not in result.output


async def test_a_service_finds_the_local_runtime_and_its_own_credentials(
    tmp_path: Path, settings: KernelSettings
) -> None:
    nats = EmbeddedNats(tmp_path / "nats", sync="default", auth=True)
    url = await asyncio.to_thread(nats.start)
    proc: asyncio.subprocess.Process | None = None
    try:
        admin = KernelSettings(
            nats_url=url,
            nats_user=ADMIN,
            state_dir=tmp_path,
            nats_password=SecretStr(nats.credentials[ADMIN]["password"]),
        )
        bus = await Bus.connect(admin, source="test")
        await bus.provision()
        (tmp_path / "runtime.json").write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "nats_url": url,
                    "database_url": settings.database_url,
                    "nats_auth": True,
                    "nats_admin_credentials": str(tmp_path / "nats" / "admin.json"),
                    "started": time.time(),
                }
            )
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentos_cli",
            "service",
            "context-manager",
            env=clean_env(tmp_path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        kv = await bus.js.key_value(subjects.HEALTH_BUCKET)

        async def reporting() -> bool:
            try:
                return any(k.startswith("context-manager.") for k in await kv.keys())
            except Exception:  # no keys yet
                return False

        await eventually(reporting, timeout=60, every=0.5)
        await bus.close()
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
        said = (await asyncio.wait_for(proc.stderr.read(), 30)).decode() if proc and proc.stderr else ""
        if proc is not None:
            await proc.wait()
        await asyncio.to_thread(nats.stop)
    said = " ".join(said.split())
    assert f"using NATS {url} from {tmp_path / 'runtime.json'}" in said, said
    assert f"using NATS user 'context-manager' from {tmp_path / 'nats' / 'credentials.json'}" in said, said
