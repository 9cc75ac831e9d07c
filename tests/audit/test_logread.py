"""``read_log``: the direct pull reader returns exactly the stored messages of a range, in order, in
batches, and ends promptly whether the range stops inside the stream, past its end, or after it."""

from __future__ import annotations

import time

from agentos_audit.logread import Stored, get_stored, read_log, stream_bounds
from agentos_kernel import Bus
from agentos_kernel.testing import unique
from agentos_schemas.events import GoalSubmitted


async def _read(bus: Bus, start: int, end: int, batch: int) -> tuple[list[list[Stored]], float]:
    t0 = time.perf_counter()
    batches = [b async for b in read_log(bus.js, start, end, batch=batch)]
    return batches, time.perf_counter() - t0


async def test_read_log_returns_the_range_in_order_in_batches(bus: Bus, tenant: str) -> None:
    for i in range(30):
        await bus.publish(bus.new(GoalSubmitted(goal_id=unique("g"), text=f"read me {i}"), tenant=tenant))
    _, last, _ = await stream_bounds(bus.js)
    start, end = last - 29, last - 5
    batches, _ = await _read(bus, start, end, batch=7)
    assert [len(b) for b in batches] == [7, 7, 7, 4]
    got = [s for b in batches for s in b]
    assert [s.seq for s in got] == list(range(start, end + 1))
    for stored in got:
        direct = await get_stored(bus.js, stored.seq)
        assert direct is not None
        assert (stored.body, stored.subject, stored.time) == (direct.body, direct.subject, direct.time)
        assert stored.headers is not None and stored.headers["Nats-Msg-Id"] == direct.headers["Nats-Msg-Id"]


async def test_read_log_ends_promptly_at_and_past_the_stream_end(bus: Bus, tenant: str) -> None:
    for i in range(4):
        await bus.publish(bus.new(GoalSubmitted(goal_id=unique("g"), text=f"tail {i}"), tenant=tenant))
    _, last, _ = await stream_bounds(bus.js)
    batches, seconds = await _read(bus, last - 3, last + 50, batch=100)  # the range runs past the end
    assert [s.seq for b in batches for s in b] == list(range(last - 3, last + 1)) and seconds < 5
    batches, seconds = await _read(bus, last + 1, last + 10, batch=100)  # nothing stored there yet
    assert batches == [] and seconds < 5
    batches, seconds = await _read(bus, last, last - 1, batch=100)  # an empty range
    assert batches == [] and seconds < 1
