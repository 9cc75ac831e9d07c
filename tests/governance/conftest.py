"""Governance fixtures: a fleet of in-process services on an auth-on NATS, the offline model behind
a request recorder."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedNats
from agentos_kernel.service import ServiceContext, start_service, stop_service
from pydantic import SecretStr


async def read_body(receive: Any) -> tuple[bytes, Any]:
    """An ASGI request's whole body, and a ``receive`` that hands it to the app again (for test
    proxies in front of the offline model that look at what is asked of it)."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # type: ignore[no-any-return]

    return body, replay


class Recorder:
    """ASGI middleware in front of the offline model: keeps every chat request it was sent, with
    when it arrived and when its answer was sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[dict[str, Any]] = []

    def active(self) -> int:
        return sum(1 for r in self.requests if r["end"] is None)

    def started_after(self, t: float) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["start"] > t]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        body, replay = await read_body(receive)
        record: dict[str, Any] = {"body": json.loads(body or b"{}"), "start": time.time(), "end": None}
        self.requests.append(record)
        try:
            await self.app(scope, replay, send)
        finally:
            record["end"] = time.time()


CHARTERS = {
    "slowpoke": ("slow", "Answers slowly, so a kill switch can catch it mid-call."),
    "echo": ("echo", "Answers at once."),
}
WORKFLOWS = [
    {
        "name": "slow-pair",
        "description": "Two slow steps in parallel.",
        "steps": [
            {"step_id": "left", "capability": "slow", "instruction": "Answer slowly (left)."},
            {"step_id": "right", "capability": "slow", "instruction": "Answer slowly (right)."},
        ],
    },
    {
        "name": "echo-one",
        "description": "One quick step.",
        "steps": [{"step_id": "echo", "capability": "echo", "instruction": "Repeat the goal back."}],
    },
]
SLOW_MS = 2500
SCENARIO = {
    "models": ["offline-fast", "offline-smart"],
    "rules": [
        {
            "name": "slow",
            "match": {"agent": "slowpoke"},
            "latency_ms": SLOW_MS,
            "respond": {"json": {"answer": "done"}},
        },
        {"name": "echo", "match": {"agent": "echo"}, "respond": {"json": {"answer": "echoed"}}},
    ],
}
SERVICES = ("orchestrator", "context-manager", "specialist", "specialist")


def charter(name: str, capability: str, role: str) -> str:
    return (
        f'---\nname: {name}\nversion: "1"\nrole: {role}\ncapabilities: [{capability}]\nmodel: fast\n'
        "capacity: 1\nmemory: {kinds: [], k: 0}\n"
        "output_schema: {type: object, required: [answer], properties: {answer: {type: string}}}\n"
        "---\nAnswer in JSON.\n"
    )


@dataclass
class Fleet:
    """An auth-on NATS, the offline model behind a recorder, and in-process services, each
    connected as its own least-privilege user (two specialist replicas)."""

    nats: EmbeddedNats
    model: Recorder
    admin: KernelSettings
    bus: Bus
    services: list[ServiceContext] = field(default_factory=list)

    def settings_for(self, user: str) -> KernelSettings:
        return self.admin.model_copy(
            update={
                "nats_user": user,
                "nats_password": SecretStr(self.nats.credentials[user]["password"]),
                "provision": "off",
            }
        )


@pytest.fixture(scope="package")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    import agentos_offline_model.server as server
    from agentos_context_manager import service as context_manager
    from agentos_offline_model import OfflineModelServer, Scenario
    from agentos_orchestrator import service as orchestrator
    from agentos_specialist import service as specialist

    root = tmp_path_factory.mktemp("fleet")
    (root / "charters").mkdir()
    for name, (capability, role) in CHARTERS.items():
        (root / "charters" / f"{name}.md").write_text(charter(name, capability, role))
    (root / "workflows").mkdir()
    for wf in WORKFLOWS:
        (root / "workflows" / f"{wf['name']}.yaml").write_text(yaml.safe_dump(wf))
    recorders: list[Recorder] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            server,
            "build_app",
            lambda scenario, build=server.build_app: recorders.append(Recorder(build(scenario))) or recorders[-1],
        )
        model = OfflineModelServer(Scenario.model_validate(SCENARIO)).start()
        nats = EmbeddedNats(root / "nats", sync="default", auth=True)
        url = nats.start()
        env = {
            "AGENTOS_CHARTERS_DIR": root / "charters",
            "AGENTOS_WORKFLOWS_DIR": root / "workflows",
            "AGENTOS_OFFLINE_MODEL_URL": model.url,
            "AGENTOS_ALLOW_LLM_CALLS": "0",
            "AGENTOS_SECRETS_DIR": root / "secrets",
            "AGENTOS_STATE_DIR": root,
        }
        for key, value in env.items():
            mp.setenv(key, str(value))
        admin = KernelSettings(
            nats_url=url,
            state_dir=root,
            publish_timeout_s=10,
            nats_user="admin",
            nats_password=SecretStr(nats.credentials["admin"]["password"]),
        )
        bus = await Bus.connect(admin, source="governance-test")
        await bus.provision()
        found = Fleet(nats, recorders[-1], admin, bus)
        modules = {"orchestrator": orchestrator, "context-manager": context_manager, "specialist": specialist}
        sub = await allow_all(bus)
        try:
            for name in SERVICES:
                found.services.append(await start_service(name, modules[name].setup, found.settings_for(name)))
            yield found
        finally:
            for ctx in reversed(found.services):
                await stop_service(ctx, timeout=3)
            await sub.unsubscribe()
            await bus.close()
            nats.stop()
            await asyncio.to_thread(model.stop)


async def allow_all(bus: Bus) -> Any:
    """A stand-in decision point that allows everything (the policy service is not under test)."""
    from agentos_schemas import new_event_id
    from agentos_schemas.rpc import POLICY_DECIDE, PolicyDecision

    async def answer(msg: Any) -> None:
        await msg.respond(PolicyDecision(decision="allow", decision_id=new_event_id()).model_dump_json().encode())

    return await bus.nc.subscribe(POLICY_DECIDE, queue="policy", cb=answer)
