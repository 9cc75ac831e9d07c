"""The service entry point: settings from the environment, HTTP on a free port reported in the
heartbeat status, schedules and KPI rules wired in."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from agentos_gateway import service
from agentos_kernel import KernelSettings
from agentos_kernel.service import start_service, stop_service


async def test_setup_serves_http_and_starts_the_configured_triggers(
        settings: KernelSettings, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "daily.yaml").write_text(
        f"schedules: [{{name: daily-report, cron: '0 6 * * *', tenant: {tenant}}}]\n")
    (tmp_path / "kpi.yaml").write_text(
        f"rules: [{{name: sales-drop, event: sale.recorded, threshold: 100, tenant: {tenant}}}]\n")
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
