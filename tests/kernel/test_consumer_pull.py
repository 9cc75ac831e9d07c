"""The consumer's live pull: handler slots bound what is in flight, a lone event is not held back,
an idle consumer's expired pulls are renewed, and a stopped consumer hands its work back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agentos_kernel import Bus
from agentos_kernel.testing import eventually, unique
from agentos_schemas import Event
from agentos_schemas.events import GoalSubmitted


def until(check: Any) -> Any:
    async def probe() -> bool:
        return bool(check())

    return probe


def goal(bus: Bus, tenant: str) -> Event[Any]:
    return bus.new(GoalSubmitted(goal_id=unique("g"), text="pull"), tenant=tenant)


async def test_concurrency_bounds_the_handlers_in_flight(bus: Bus, tenant: str) -> None:
    running, most, done = 0, 0, []
    gate = asyncio.Event()

    async def handler(event: Event[Any]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        done.append(event.id)

    consumer = await bus.consumer(unique("pull"), [f"agentos.{tenant}.goal.submitted"], handler, concurrency=3).start()
    try:
        await bus.publish_many([goal(bus, tenant) for _ in range(20)])
        await eventually(until(lambda: running == 3), timeout=10)
        await asyncio.sleep(0.3)
        assert running == 3 and most == 3  # the rest waits in the stream, not in this process
        gate.set()
        await eventually(until(lambda: len(done) == 20), timeout=15)
        assert most == 3
    finally:
        await consumer.stop()


async def test_an_idle_consumer_renews_its_pull_and_takes_a_lone_event_at_once(bus: Bus, tenant: str) -> None:
    seen: dict[str, float] = {}

    async def handler(event: Event[Any]) -> None:
        seen[event.id] = time.perf_counter()

    consumer = bus.consumer(unique("pull"), [f"agentos.{tenant}.goal.submitted"], handler, concurrency=8)
    consumer.PULL_EXPIRES_S = 0.4  # type: ignore[misc]
    await consumer.start()
    try:
        await asyncio.sleep(1.3)  # three pulls expired meanwhile
        event = goal(bus, tenant)
        sent = time.perf_counter()
        await bus.publish(event)
        await eventually(until(lambda: event.id in seen), timeout=5)
        assert seen[event.id] - sent < 0.3  # not held until a pull expires or fills
    finally:
        await consumer.stop()


async def test_work_not_started_before_stop_goes_to_the_next_consumer(bus: Bus, tenant: str) -> None:
    durable = unique("pull")
    first: list[str] = []
    gate = asyncio.Event()

    async def slow(event: Event[Any]) -> None:
        first.append(event.id)
        await gate.wait()

    consumer = await bus.consumer(durable, [f"agentos.{tenant}.goal.submitted"], slow, concurrency=2).start()
    events = [goal(bus, tenant) for _ in range(6)]
    await bus.publish_many(events)
    await eventually(until(lambda: len(first) == 2), timeout=10)
    gate.set()
    await consumer.stop()
    second: list[str] = []

    async def fast(event: Event[Any]) -> None:
        second.append(event.id)

    again = await bus.consumer(durable, [f"agentos.{tenant}.goal.submitted"], fast, concurrency=8).start()
    try:
        await eventually(until(lambda: set(first) | set(second) >= {e.id for e in events}), timeout=15)
        assert not set(first) & set(second)  # the two finished ones were acked, not run again
    finally:
        await again.stop()
