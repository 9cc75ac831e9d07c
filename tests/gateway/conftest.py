"""Gateways for tests: real uvicorn servers on loopback port 0 in the test's event loop, each with
its own NATS connection to the session's JetStream, a unique tenant, test API keys and webhook
secrets; plus helpers that read what reached the event log and the DLQ, and the real policy and
audit services the operator and analyst endpoints ask."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats.errors
import pytest
from agentos_audit.schema import drop_schema
from agentos_audit.service import DURABLE as AUDIT_DURABLE
from agentos_audit.service import setup as audit_setup
from agentos_gateway import Gateway, GatewayServer, GatewaySettings, build_app, hash_key
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import unique
from agentos_policy.service import setup as policy_setup
from agentos_schemas import DLQ_STREAM, EVENTS_STREAM, Event, codec
from nats.js import api

ROLES = ("integrator", "operator", "analyst", "admin")
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
OLD_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def key_for(role: str, tenant: str) -> str:
    """The plaintext test key of a role (the gateway only knows its hash)."""
    return f"test-{role}-{tenant}"


@dataclass
class Running:
    """One started gateway."""

    gw: Gateway
    server: GatewayServer
    bus: Bus
    tenant: str
    url: str

    def client(self, role: str | None = "integrator", **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key_for(role, self.tenant)}"} if role else {}
        headers |= kwargs.pop("headers", {})
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=15, **kwargs)


def gateway_settings(tenant: str, **overrides: Any) -> GatewaySettings:
    keys = [
        {"name": f"{role}-key", "sha256": hash_key(key_for(role, tenant)), "roles": [role], "tenant": tenant}
        for role in ROLES
    ]
    base: dict[str, Any] = {
        "api_keys": keys,
        "rate_per_s": 1000,
        "burst": 1000,
        "webhooks": {
            "zendesk": {"secrets": [SECRET, OLD_SECRET], "tenant": tenant},
            "square": {"secrets": [SECRET], "tenant": tenant},
            "ce": {"secrets": [SECRET], "tenant": tenant, "mapping": "cloudevent"},
            "nomap": {"secrets": [SECRET], "tenant": tenant, "mapping": "nosuchthing"},
        },
    }
    return GatewaySettings.model_validate(base | overrides)


@pytest.fixture
async def start_gateway(
    settings: KernelSettings, bus: Bus, tenant: str
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[Running] = []

    async def start(**overrides: Any) -> Running:
        bus = await Bus.connect(settings.model_copy(update={"tenant": tenant}), source="gateway")
        gw = await Gateway(bus, gateway_settings(tenant, **overrides)).start()
        server = await GatewayServer(build_app(gw)).start()
        running = Running(gw, server, bus, tenant, server.url)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.server.stop()
        await running.bus.close()


@pytest.fixture
async def gateway(start_gateway: Callable[..., Awaitable[Running]]) -> Running:
    return await start_gateway()


async def stored(bus: Bus, subject: str, *, wait_for: int = 0, timeout: float = 5.0) -> list[Event[Any]]:
    """Every event on ``subject`` in the log (waiting until there are ``wait_for`` of them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        events = await _read(bus, subject)
        if len(events) >= wait_for or loop.time() > deadline:
            return events
        await asyncio.sleep(0.1)


async def _read(bus: Bus, subject: str) -> list[Event[Any]]:
    sub = await bus.js.subscribe(
        subject, stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
    )
    out: list[Event[Any]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            out.append(await bus.decode(msg.data, msg.headers))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out


async def dlq_seq(bus: Bus) -> int:
    """The DLQ's last sequence now (read dead letters after it)."""
    return (await bus.js.stream_info(DLQ_STREAM)).state.last_seq


async def dead_letters(bus: Bus, after: int, *, wait_for: int = 0, timeout: float = 5.0) -> list[Any]:
    """Gateway dead letters stored after sequence ``after``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = (await bus.js.stream_info(DLQ_STREAM)).state.last_seq
        found = []
        for seq in range(after + 1, last + 1):
            msg = await bus.js.get_msg(DLQ_STREAM, seq)
            if msg.subject == "dlq.agentos.gateway":
                found.append(msg)
        if len(found) >= wait_for or loop.time() > deadline:
            return found
        await asyncio.sleep(0.1)


def structured_body(event: Event[Any]) -> bytes:
    return codec.encode(event)


# -- the services behind the operator and analyst endpoints ----------------------------------------

POLICY_DIR = Path(__file__).parents[1] / "policy" / "policies" / "strict"


@pytest.fixture(scope="module")
async def policy_service(settings: KernelSettings) -> AsyncIterator[ServiceContext]:
    """The real policy service, with the strict test policy (humans alice, bob: approver; carol:
    admin; oscar: operator; ana: analyst)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTOS_POLICY_DIR", str(POLICY_DIR))
        ctx = await start_service("policy", policy_setup, settings, database=True)
        try:
            yield ctx
        finally:
            await stop_service(ctx)


@asynccontextmanager
async def running_audit(settings: KernelSettings, pool: asyncpg.Pool, folder: Path) -> AsyncIterator[ServiceContext]:
    """The real audit service projecting the session's log into a schema of its own."""
    schema = unique("audit_rpc_")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTOS_AUDIT_SCHEMA_NAME", schema)
        mp.setenv("AGENTOS_AUDIT_KEY_FILE", str(folder / "audit-key.pem"))
        mp.setenv("AGENTOS_AUDIT_BATCH", "2000")
        ctx = await start_service("audit", audit_setup, settings, database=True)
        try:
            yield ctx
        finally:
            await stop_service(ctx)
            bus = await Bus.connect(settings, source="test-cleanup")
            with contextlib.suppress(Exception):
                await bus.js.delete_consumer(EVENTS_STREAM, AUDIT_DURABLE)
            await bus.close()
            await drop_schema(pool, schema)


@pytest.fixture(scope="module")
async def audit_service(
    settings: KernelSettings, pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceContext]:
    async with running_audit(settings, pool, tmp_path_factory.mktemp("audit")) as ctx:
        yield ctx
