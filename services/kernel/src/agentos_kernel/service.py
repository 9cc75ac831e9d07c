"""Running one service process: connect, provision, start consumers, heartbeat, stop gracefully.

Every service also gets the governance every process needs: log records are redacted, the
secret store's values are registered with the redactor, and a :class:`ControlWatcher` keeps the
kill switches current.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats.errors
from agentos_schemas import new_event_id
from agentos_schemas import subjects as s

from agentos_kernel import redact
from agentos_kernel.bus import Bus
from agentos_kernel.consumer import Consumer
from agentos_kernel.control import ControlWatcher
from agentos_kernel.db import create_pool
from agentos_kernel.faults import FAULTS, contained
from agentos_kernel.secrets import SecretStore
from agentos_kernel.settings import KernelSettings

log = logging.getLogger("agentos.service")
SUPERVISOR_ENV = "AGENTOS_SUPERVISOR_PID"
"""The pid of the process that started this service and stops it; the service stops when it is gone."""


@dataclass
class ServiceContext:
    """What a service's setup function gets: the bus, settings, and (if it asked) a Postgres pool."""

    name: str
    bus: Bus
    settings: KernelSettings
    instance: str
    pool: asyncpg.Pool | None = None
    consumers: list[Consumer] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    watcher: ControlWatcher | None = None

    async def consume(self, durable: str, filters: list[str], handler: Any, **options: Any) -> Consumer:
        consumer = await self.bus.consumer(durable, filters, handler, **options).start()
        self.consumers.append(consumer)
        return consumer


Setup = Callable[[ServiceContext], Awaitable[None]]


async def start_service(
    name: str, setup: Setup, settings: KernelSettings, *, database: bool = False, verbatim_json: bool = False
) -> ServiceContext:
    """Connect, provision (if allowed), follow the kill switches, then run ``setup``. The pool
    redacts the JSON it sends (:mod:`agentos_kernel.guard`) unless ``verbatim_json`` (a projection
    of the already-redacted log that must keep its bytes exactly)."""
    redact.install_logging()
    await asyncio.to_thread(SecretStore.default().register_all)
    bus = await Bus.connect(settings, source=name)
    if settings.provision != "off":
        await bus.provision(update=settings.provision == "update")
    instance = f"{socket.gethostname()}-{os.getpid()}-{new_event_id()[-6:]}"
    redact_json = settings.redact_stores and not verbatim_json
    pool = await create_pool(settings.database_url, redact=redact_json) if database else None
    ctx = ServiceContext(name=name, bus=bus, settings=settings, instance=instance, pool=pool)
    if settings.control:
        ctx.watcher = await ControlWatcher(bus.js, create=settings.provision != "off").start()
    await setup(ctx)
    return ctx


async def stop_service(ctx: ServiceContext, timeout: float = 10.0) -> None:
    stopped = await asyncio.gather(*(c.stop(timeout) for c in ctx.consumers), return_exceptions=True)
    for consumer, result in zip(ctx.consumers, stopped, strict=True):
        if isinstance(result, Exception):  # the other consumers, and the rest of the service, still stop
            FAULTS.note(f"{ctx.name}: stop consumer {consumer.durable}", result)
    if ctx.watcher is not None:
        await ctx.watcher.stop()
    for close in reversed(ctx.closers):
        # A closer is the service's own code: whatever it raises, the other closers still run.
        with contained(f"{ctx.name}: run a closer on stop (any error: the rest still close)"):
            await close()
    with contained(
        f"{ctx.name}: delete this instance's health record on stop", nats.errors.Error, OSError, TimeoutError
    ):
        kv = await ctx.bus.js.key_value(s.HEALTH_BUCKET)
        await kv.delete(_health_key(ctx))
    if ctx.pool is not None:
        await ctx.pool.close()
    await ctx.bus.close()


def _health_key(ctx: ServiceContext) -> str:
    return f"{ctx.name}.{ctx.instance}".replace(":", "_")


async def heartbeat(ctx: ServiceContext, started: float, every: float = 5.0) -> None:
    """Write this instance's health into the ``AGENTOS_HEALTH`` bucket (entries expire after 30 s)."""
    kv = await ctx.bus.js.key_value(s.HEALTH_BUCKET)
    while True:
        now = time.time()
        failing = [f"{c.durable}: {e[1]}" for c in ctx.consumers if (e := c.last_error) and now - e[0] < 60]
        report = {
            "service": ctx.name,
            "instance": ctx.instance,
            "pid": os.getpid(),
            "started": started,
            "ts": now,
            "consumers": [c.durable for c in ctx.consumers],
            "dead_lettered": sum(c.dead_lettered for c in ctx.consumers),
            "consumer_error": "; ".join(failing) or None,
            **FAULTS.report(),
            **ctx.status,
        }
        report["status"] = _state(ctx, report)
        with contained("write this instance's health record", nats.errors.Error, OSError, TimeoutError):
            await kv.put(_health_key(ctx), json.dumps(report).encode())
        await asyncio.sleep(every)


def _state(ctx: ServiceContext, report: dict[str, Any]) -> str:
    """``ok``; ``reconnecting`` while the bus is away; ``degraded`` while a part of the service
    reports an error (a key ending in ``_error`` with a value: a consumer's handling failed in the
    last minute, or a part's own status, such as the audit projector's)."""
    if not ctx.bus.nc.is_connected:
        return "reconnecting"
    return "degraded" if any(v for k, v in report.items() if k.endswith("_error")) else "ok"


async def exit_with_parent(parent: int, stop: asyncio.Event, every_s: float = 0.5) -> None:
    """Set ``stop`` (as SIGTERM does) once ``parent``, the process that started this one, is gone:
    a supervisor that was killed cannot stop its children, which would otherwise run on against
    servers that the next start replaces."""
    while os.getppid() == parent and not stop.is_set():
        await asyncio.sleep(every_s)
    if not stop.is_set():
        log.warning("the process %d that started this one is gone; stopping", parent)
        stop.set()


def _supervisor() -> int:
    """The pid in ``AGENTOS_SUPERVISOR_PID`` (0: none, or not a pid)."""
    value = os.environ.get(SUPERVISOR_ENV, "")
    if value and not value.isdigit():
        log.warning("%s=%r is not a pid; not watching a supervisor", SUPERVISOR_ENV, value)
    return int(value) if value.isdigit() else 0


async def run_service(
    name: str, setup: Setup, settings: KernelSettings, *, database: bool = False, verbatim_json: bool = False
) -> None:
    """Run a service until SIGTERM or SIGINT, or until the supervisor named by
    ``AGENTOS_SUPERVISOR_PID`` (``agentos up``, a gateway's first process) is gone; then stop it
    gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = _supervisor()
    watch = asyncio.create_task(exit_with_parent(supervisor, stop)) if supervisor else None
    ctx = await start_service(name, setup, settings, database=database, verbatim_json=verbatim_json)
    beat = asyncio.create_task(heartbeat(ctx, time.time()))
    log.info("%s ready (%s)", name, ctx.instance)
    await stop.wait()
    beat.cancel()
    if watch is not None:
        watch.cancel()
    await stop_service(ctx)
