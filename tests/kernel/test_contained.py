"""A contained error is logged with its place, counted and reported, never swallowed silently;
one of a type the place did not expect propagates."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import nats.js.errors
import pytest
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.faults import Faults, contained
from agentos_kernel.service import heartbeat, start_service, stop_service
from agentos_kernel.testing import eventually
from agentos_schemas import subjects as s


def test_a_contained_error_is_logged_counted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults()
    assert faults.report() == {"contained": 0}
    with caplog.at_level(logging.WARNING, logger="agentos.faults"):
        for _ in range(2):
            with contained("close the test consumer", ConnectionError, faults=faults):
                raise ConnectionError("gone")
    assert faults.counts["close the test consumer"] == 2
    report = faults.report()
    assert report["contained"] == 2 and report["last_contained"] == "close the test consumer: ConnectionError: gone"
    assert "contained at close the test consumer (2 so far): ConnectionError: gone" in caplog.text


def test_an_unexpected_error_propagates_and_any_error_is_contained_only_when_asked() -> None:
    faults = Faults()
    with pytest.raises(KeyError), contained("read a cache", ConnectionError, faults=faults):
        raise KeyError("bug")
    with contained("best-effort write", faults=faults):
        raise KeyError("anything")
    assert dict(faults.counts) == {"best-effort write": 1}
    with pytest.raises(SystemExit), contained("anything", faults=faults):
        raise SystemExit(1)  # not an Exception: never contained


async def test_a_services_health_record_reports_what_it_contained(settings: KernelSettings, bus: Bus) -> None:
    from agentos_context_manager.service import NAME, setup

    ctx = await start_service(NAME, setup, settings)
    beat = asyncio.create_task(heartbeat(ctx, time.time(), every=0.5))  # as run_service runs it
    try:
        with contained("a test's deliberate failure", RuntimeError):
            raise RuntimeError(f"planted in {ctx.instance}")
        kv = await bus.js.key_value(s.HEALTH_BUCKET)

        async def reported() -> bool:
            try:
                record = json.loads((await kv.get(f"{NAME}.{ctx.instance}".replace(":", "_"))).value or b"{}")
            except nats.js.errors.KeyNotFoundError:
                return False
            return f"planted in {ctx.instance}" in str(record.get("last_contained")) and record["contained"] >= 1

        await eventually(reported, timeout=15)
    finally:
        beat.cancel()
        await stop_service(ctx)
