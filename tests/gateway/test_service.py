"""The service entry point: settings from the environment, HTTP on a free port reported in the
heartbeat status, schedules and KPI rules wired in."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest
from agentos_gateway import service
from agentos_gateway.workers import Workers
from agentos_kernel import KernelSettings
from agentos_kernel.service import start_service, stop_service


async def test_setup_serves_http_and_starts_the_configured_triggers(
    settings: KernelSettings, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "daily.yaml").write_text(
        f"schedules: [{{name: daily-report, cron: '0 6 * * *', tenant: {tenant}}}]\n"
    )
    (tmp_path / "kpi.yaml").write_text(
        f"rules: [{{name: sales-drop, event: sale.recorded, threshold: 100, tenant: {tenant}}}]\n"
    )
    monkeypatch.setenv("AGENTOS_GATEWAY_SCHEDULES_DIR", str(tmp_path / "schedules"))
    monkeypatch.setenv("AGENTOS_GATEWAY_KPI_RULES", str(tmp_path / "kpi.yaml"))
    ctx = await start_service(service.NAME, service.setup, settings, database=True)
    try:
        url = ctx.status["url"]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert ctx.status["schedules"] == ["daily-report"] and ctx.status["kpi_rules"] == ["sales-drop"]
        assert "gateway-kpi" in [c.durable for c in ctx.consumers]
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/readyz")).json()["status"] == "ready"
            goal = {"text": "hello", "tenant": tenant}
            assert (await http.post("/goals", json=goal)).status_code == 202  # loopback needs no key here
    finally:
        await stop_service(ctx)


async def test_workers_share_the_port_and_stop_with_the_service(
    settings: KernelSettings, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AGENTOS_GATEWAY_WORKERS=3: two more processes listen on the same port (SO_REUSEPORT), new
    connections reach all three, each accepts events, and stopping the service stops them."""
    import asyncio
    import os

    monkeypatch.setenv("AGENTOS_GATEWAY_WORKERS", "3")
    ctx = await start_service(service.NAME, service.setup, settings)
    workers = next(w for c in ctx.closers if isinstance(w := getattr(c, "__self__", None), Workers))
    try:
        url = ctx.status["url"]
        assert ctx.status["workers"] == 3
        pids: set[int] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(pids) < 3 and loop.time() < deadline:  # workers take a moment to start
            async with httpx.AsyncClient(base_url=url) as http:  # a new connection each time
                with contextlib.suppress(httpx.HTTPError):
                    pids.add((await http.get("/healthz")).json()["pid"])
            await asyncio.sleep(0.05)
        assert pids == {os.getpid(), *workers.pids}, pids
        for i in range(12):  # events accepted whichever process takes the connection
            async with httpx.AsyncClient(base_url=url) as http:
                goal = {"text": f"hello {i}", "tenant": tenant}
                assert (await http.post("/goals", json=goal)).status_code == 202
        killed = workers.pids[0]
        os.kill(killed, 9)  # a worker that dies is started again
        while (workers.restarts < 1 or len(workers.pids) < 2) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert workers.restarts == 1 and killed not in workers.pids and len(workers.pids) == 2
    finally:
        await stop_service(ctx)
    assert workers.pids == [] and all(p is not None and p.returncode is not None for p in workers.procs)
