"""The gateway's boundaries survive whatever they call and never hide it: a bug answers 500 and is
counted, a dead letter that cannot be written keeps the caller's 4xx and is counted, the scheduler
outlives a failing check and counts it, and an error uvicorn ended with is counted when the
server stops. The counts are what the health record reports (``agentos status`` shows them)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agentos_gateway.dlq import DeadLetters
from agentos_gateway.problems import INTERNAL_ERROR, internal_error
from agentos_gateway.schedules import Scheduler
from agentos_gateway.server import GatewayServer
from agentos_kernel.faults import FAULTS


def test_a_bug_answers_500_and_is_counted() -> None:
    before = FAULTS.counts[INTERNAL_ERROR]
    response = internal_error("POST", "/events", RuntimeError("boom"))
    assert response.status_code == 500
    assert json.loads(bytes(response.body))["code"] == "internal_error"
    assert FAULTS.counts[INTERNAL_ERROR] == before + 1


async def test_a_dead_letter_that_cannot_be_written_is_counted_and_reported_false() -> None:
    class BrokenBus:
        async def publish_raw(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("not what a publish raises")

    where = "write a rejected request to the DLQ"
    before = FAULTS.counts[where]
    dlq = DeadLetters(BrokenBus())  # a fake bus
    kept = await dlq.record(b"{}", {}, route="POST /events", status=400, code="invalid_event", reason="bad")
    assert kept is False and dlq.skipped == 1
    assert FAULTS.counts[where] == before + 1


async def test_the_scheduler_outlives_a_failing_check_and_counts_it() -> None:
    class Failing(Scheduler):
        async def check(self) -> int:
            raise KeyError("last")

    before = FAULTS.counts["check the schedules"]
    scheduler = Failing(None, [], None, tenant="t", poll_s=0.01)
    task = asyncio.create_task(scheduler.run())
    try:
        while FAULTS.counts["check the schedules"] < before + 2:  # a second check: the loop went on
            await asyncio.sleep(0.01)
        assert not task.done()
    finally:
        task.cancel()


async def test_an_error_uvicorn_ended_with_is_counted_when_the_server_stops() -> None:
    async def crashed() -> None:
        raise OSError("the socket went away")

    where = "serve the gateway's HTTP (uvicorn ended with an error)"
    before = FAULTS.counts[where]
    server = GatewayServer(object(), fast_path=False)
    server._task = asyncio.create_task(crashed())
    await server.stop()
    assert FAULTS.counts[where] == before + 1
    assert server._task is None
