"""The gateway service: the HTTP ingress, plus the schedules and KPI rules when configured.

``agentos up`` starts it like every service. It listens on ``AGENTOS_GATEWAY_HOST`` /
``AGENTOS_GATEWAY_PORT`` (default 127.0.0.1 and a free port; containers set 0.0.0.0 and 8080),
logs the URL it got and reports it in its heartbeat (``url``), which ``agentos status`` shows and
``agentos send`` reads. Postgres is used only when KPI rules are configured.
``AGENTOS_GATEWAY_WORKERS=N`` serves the port from N processes (:mod:`agentos_gateway.workers`).
"""

from __future__ import annotations

import asyncio
import logging

from agentos_kernel import ConfigError
from agentos_kernel.service import ServiceContext, run_service
from agentos_kernel.settings import KernelSettings
from agentos_kernel.tasks import cancel_and_wait

from agentos_gateway import kv as buckets
from agentos_gateway.app import build_app
from agentos_gateway.gateway import Gateway
from agentos_gateway.kpi import load_rules
from agentos_gateway.kpi_engine import KpiEngine
from agentos_gateway.schedules import Scheduler, load_schedules
from agentos_gateway.server import GatewayServer
from agentos_gateway.settings import GatewaySettings
from agentos_gateway.workers import Workers

NAME = "gateway"
log = logging.getLogger("agentos.gateway")


async def start_triggers(ctx: ServiceContext, gw: Gateway, settings: GatewaySettings) -> None:
    """Start the scheduler and the KPI engine if schedules or rules are configured."""
    schedules = load_schedules(settings.schedules_dir)
    if schedules:
        kv = await buckets.bucket(ctx.bus, buckets.SCHEDULES)
        scheduler = Scheduler(kv, schedules, gw.publish, tenant=gw.tenant)
        task = asyncio.create_task(scheduler.run(), name="gateway-schedules")

        async def stop_scheduler() -> None:
            await cancel_and_wait(task)

        ctx.closers.append(stop_scheduler)
        ctx.status["schedules"] = [s.name for s in schedules]
    rules = load_rules(settings.kpi_rules)
    if rules:
        if ctx.pool is None:
            raise ConfigError("KPI rules need Postgres: set AGENTOS_DATABASE_URL (or run `agentos up`)")
        engine = await KpiEngine(ctx.pool, ctx.bus, rules, gw.publish).start()
        if engine.consumer is not None:
            ctx.consumers.append(engine.consumer)
        ctx.status["kpi_rules"] = [r.name for r in rules]


async def setup(ctx: ServiceContext) -> None:
    """Open the KV buckets, start the triggers, then serve HTTP (with its worker processes, if
    configured) and report the URL."""
    settings = GatewaySettings.load()
    gw = await Gateway(ctx.bus, settings).start()
    worker = settings.worker_of is not None
    if not worker:  # schedules and KPI rules: in the first process only
        await start_triggers(ctx, gw, settings)
    server = await GatewayServer(
        build_app(gw), settings.host, settings.port, reuse_port=worker or settings.workers > 1
    ).start()
    ctx.closers.append(server.stop)  # closers run last-first: HTTP stops before the triggers
    if settings.workers > 1 and not worker:
        workers = await Workers(settings.workers - 1, settings.host, server.port or 0, ctx.settings).start()
        ctx.closers.append(workers.stop)  # … and the workers before this process's HTTP
        ctx.status["workers"] = settings.workers
    if worker:
        ctx.status["worker_of"] = settings.worker_of
    ctx.status["url"] = server.url
    ctx.status["mappings"] = sorted(gw.mappings)
    log.info("gateway %slistening on %s (OpenAPI at %s/docs)", "worker " if worker else "", server.url, server.url)


async def main(settings: KernelSettings) -> None:
    """Run the gateway until SIGTERM/SIGINT."""
    gateway_settings = GatewaySettings.load()
    await run_service(NAME, setup, settings, database=gateway_settings.kpi_rules is not None)


__all__ = ["NAME", "main", "setup", "start_triggers"]
