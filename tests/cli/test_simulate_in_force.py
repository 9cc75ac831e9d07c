"""`agentos policy simulate` without --policy-dir simulates the policy in force (the one the running
policy service reports) and says which. Through the real CLI against the session's NATS and
Postgres, with the policy service (strict test policy) running in-process and heartbeating."""

from __future__ import annotations

import asyncio
import json
import time

from agentos_cli.main import app
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext, heartbeat
from agentos_kernel.tasks import cancel_and_wait
from agentos_kernel.testing import eventually
from agentos_policy.model import load_policy
from agentos_schemas import subjects
from nats.js.errors import NoKeysError
from typer.testing import CliRunner, Result

from tests.policy.conftest import STRICT, ask, policy_service

__all__ = ["policy_service"]


async def simulate(settings: KernelSettings, **env: str | None) -> Result:
    full = {"AGENTOS_NATS_URL": settings.nats_url or "", "AGENTOS_STATE_DIR": "/nonexistent", "COLUMNS": "300", **env}
    return await asyncio.to_thread(CliRunner().invoke, app, ["policy", "simulate", "--since", "1h"], env=full)


async def test_simulate_defaults_to_the_policy_in_force_and_says_which(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tenant: str
) -> None:
    version = load_policy(STRICT).version
    await ask(bus, tenant, "finance", "model_call", "fast", model="fast", goal_id="g", task_id="t")
    kv = await bus.js.key_value(subjects.HEALTH_BUCKET)
    beat = asyncio.create_task(heartbeat(policy_service, time.time(), every=0.2))

    async def policy_keys() -> list[str]:
        try:
            return [k for k in await kv.keys() if k.startswith("policy.")]
        except NoKeysError:
            return []

    async def reported() -> bool:
        dirs = [json.loads((await kv.get(k)).value or b"{}").get("policy_dir") for k in await policy_keys()]
        return str(STRICT.resolve()) in dirs

    try:
        await eventually(reported, timeout=10)
        result = await simulate(settings, AGENTOS_POLICY_DIR=None)  # only the running service can say which
    finally:
        await cancel_and_wait(beat)
    assert result.exit_code == 0, result.output
    assert (
        f"simulating policy {version} from {STRICT.resolve()} (the policy in force: version {version}, "
        "reported by the running policy service)"
    ) in result.stdout, result.stdout
    assert f"policy {version}: " in result.stdout and "0 would change" in result.stdout, result.stdout
    for key in await policy_keys():
        await kv.delete(key)
    fallback = await simulate(settings, AGENTOS_POLICY_DIR=str(STRICT))
    assert fallback.exit_code == 0, fallback.output
    assert "no policy service is reporting" in fallback.stdout and "AGENTOS_POLICY_DIR" in fallback.stdout
