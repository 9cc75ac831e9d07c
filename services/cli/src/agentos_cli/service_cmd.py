"""`agentos service NAME` and `agentos demo`: run one service in the foreground, or the whole demo.

A service run by hand next to a local `agentos up` finds that runtime itself: its servers from
``<state_dir>/runtime.json`` and its own NATS user and password from the embedded server's
credentials file (owner-only, next to the admin's), exactly as `agentos up` hands them to the
services it supervises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentos_cli import registry
from agentos_cli.connect import run
from agentos_cli.errors import fail

if TYPE_CHECKING:
    from agentos_kernel import Bus, KernelSettings
    from rich.console import Console

DATABASE_SERVICES = ("policy", "memory", "audit")


def local_runtime(name: str, settings: KernelSettings) -> tuple[dict[str, str], list[str]]:
    """The variables ``name`` needs from the `agentos up` running in ``settings.state_dir`` (only
    those not configured already), and where each came from; nothing when no runtime is up."""
    from agentos_kernel.runtime import RUNTIME_FILE, read_runtime

    info = read_runtime(settings)
    if not info:
        return {}, []
    where = settings.state_dir / RUNTIME_FILE
    env: dict[str, str] = {}
    said: list[str] = []
    for var, key, what in (
        ("AGENTOS_NATS_URL", "nats_url", "NATS"),
        ("AGENTOS_DATABASE_URL", "database_url", "Postgres"),
    ):
        if not os.environ.get(var) and info.get(key):
            env[var] = str(info[key])
            said.append(f"{what} {info[key]} from {where}")
    if (
        info.get("offline_model_url")
        and not os.environ.get("AGENTOS_MODELS")
        and not os.environ.get("AGENTOS_OFFLINE_MODEL_URL")
    ):
        env["AGENTOS_OFFLINE_MODEL_URL"] = str(info["offline_model_url"])
        said.append(f"the offline model at {info['offline_model_url']}")
    if info.get("nats_auth") and not os.environ.get("AGENTOS_NATS_USER"):
        env.update(_credentials(name, info))
        said.append(f"NATS user {name!r} from {Path(info['nats_admin_credentials']).parent / 'credentials.json'}")
    return env, said


def _credentials(name: str, info: dict[str, Any]) -> dict[str, str]:
    path = Path(str(info.get("nats_admin_credentials") or "")).parent / "credentials.json"
    try:
        password = json.loads(path.read_text())[name]["password"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(
            f"the runtime in {info.get('nats_url')} requires NATS credentials, but {str(path)!r} has none "
            f"for {name!r} ({type(exc).__name__}); set AGENTOS_NATS_USER and AGENTOS_NATS_PASSWORD"
        )
    return {"AGENTOS_NATS_USER": name, "AGENTOS_NATS_PASSWORD": str(password), "AGENTOS_PROVISION": "off"}


def missing(name: str, settings: KernelSettings) -> list[str]:
    """The variables ``name`` cannot run without, when neither set nor found in a local runtime."""
    need = [("AGENTOS_NATS_URL", settings.nats_url)]
    if name in DATABASE_SERVICES:
        need.append(("AGENTOS_DATABASE_URL", settings.database_url))
    return [var for var, value in need if not value]


def run_one(name: str, err: Console) -> None:
    """Run service ``name`` until it is stopped."""
    from agentos_kernel import KernelSettings

    try:
        module = registry.load(name)
    except (KeyError, ImportError) as exc:
        fail(exc)
    env, said = local_runtime(name, KernelSettings())
    os.environ.update(env)
    for line in said:
        err.print(f"agentos service {name}: using {line}", highlight=False, soft_wrap=True)
    settings = KernelSettings()
    if lacking := missing(name, settings):
        state = settings.state_dir
        fail(
            f"no AgentOS runtime is up in {state} (no runtime.json from `agentos up`), and {', '.join(lacking)} "
            f"{'is' if len(lacking) == 1 else 'are'} not set: set {' and '.join(lacking)} (plus "
            "AGENTOS_NATS_USER and AGENTOS_NATS_PASSWORD if the NATS server requires a login), or start "
            "`agentos up` first, or point AGENTOS_STATE_DIR at a running one"
        )
    logging.basicConfig(
        level=os.environ.get("AGENTOS_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    run(module.main(settings))


async def run_demo(settings: KernelSettings, goal: str, timeout: float, console: Console, err: Console) -> bool:
    from agentos_kernel import Bus

    from agentos_cli import goals as goals_mod
    from agentos_cli.supervisor import Runtime

    runtime = Runtime(settings, registry.available(), logs=settings.state_dir / "logs", console=err)
    try:
        resolved = await runtime.start()
        console.print(f"AgentOS started: services {', '.join(runtime.services)}; state in {resolved.state_dir}")
        if runtime.offline is not None:
            console.print(
                "[bold yellow]Using the OFFLINE deterministic model[/] (shipped with AgentOS, served over "
                f"the OpenAI API at {runtime.offline.url}; set AGENTOS_MODELS for real models)"
            )
        bus = await Bus.connect(resolved, source="cli")
        try:
            await wait_for_services(bus, runtime.services)
            event = await goals_mod.submit(bus, goal, tenant=resolved.tenant)
            console.print(f"goal [bold]{event.data.goal_id}[/]: {goal}")
            view = await goals_mod.watch(bus, event.data.goal_id, console, timeout=timeout)
            return goals_mod.render_outcome(view, console)
        finally:
            await bus.close()
    finally:
        await runtime.stop()


async def wait_for_services(bus: Bus, services: list[str], timeout: float = 60.0) -> None:
    """Until every service reports healthy (and the specialists have announced their agents)."""
    from agentos_kernel import Failed

    from agentos_cli import inspect_bus

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        report = await inspect_bus.collect_status(bus)
        up = {r.get("service") for r in report["services"] if r.get("age_s", 99) < 15}
        if set(services) <= up:
            return
        await asyncio.sleep(0.3)
    raise Failed(f"services did not come up within {timeout:.0f}s; see {bus.settings.state_dir}/logs")
