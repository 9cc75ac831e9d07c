"""Partition leases among replicas (agentos_kernel.ownership) and the log follower, on real NATS:
each partition held by exactly one live replica at every moment, a joining replica takes its share,
a leaving one hands it over at once, a dead one's share moves after its leases lapse; the follower
sees every event, live, and its sync() covers everything stored before it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import pytest
from agentos_kernel import Bus, ConfigError
from agentos_kernel.follow import Follower
from agentos_kernel.ownership import LEASE_TTL_S, Ownership, open_bucket
from agentos_kernel.testing import eventually, unique
from agentos_schemas.events import AgentRetired

PARTITIONS = 8


def held(replicas: list[Ownership]) -> list[int]:
    return sorted(p for r in replicas for p in r.active)


async def watch_exclusive(replicas: list[Ownership], stop: asyncio.Event) -> list[str]:
    """Record any moment at which two replicas both act on a partition."""
    overlaps: list[str] = []
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        now = loop.time()
        for p in range(PARTITIONS):
            acting = [r.me for r in replicas if p in r.active and now < r.fresh_until.get(p, 0.0)]
            if len(acting) > 1:
                overlaps.append(f"partition {p}: {acting}")
        await asyncio.sleep(0.01)
    return overlaps


async def test_partitions_move_with_the_replicas_and_are_never_held_twice(bus: Bus) -> None:
    await open_bucket(bus.js)
    service = unique("svc")
    replicas = [Ownership(bus, service, f"r{i}", partitions=PARTITIONS, every_s=0.2) for i in range(3)]
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_exclusive(replicas, stop))
    try:
        await replicas[0].start()
        assert held(replicas) == list(range(PARTITIONS)), "a lone replica holds every partition"
        await replicas[1].start()
        await replicas[2].start()

        async def shared() -> bool:
            return held(replicas) == list(range(PARTITIONS)) and sum(1 for r in replicas if r.active) >= 2

        await eventually(shared, timeout=10)
        moved = set(replicas[1].active)
        await replicas[1].stop()  # a graceful stop hands its share over within a round

        async def taken_over() -> bool:
            return held([replicas[0], replicas[2]]) == list(range(PARTITIONS))

        await eventually(taken_over, timeout=5)
        assert moved <= replicas[0].active | replicas[2].active
    finally:
        stop.set()
        overlaps = await watcher
        for r in replicas:
            await r.stop()
    assert not overlaps, overlaps[:3]


async def test_a_dead_replicas_partitions_move_after_its_leases_lapse(bus: Bus) -> None:
    await open_bucket(bus.js)
    service = unique("svc")
    alive = Ownership(bus, service, "alive", partitions=PARTITIONS, every_s=0.2)
    dead = Ownership(bus, service, "dead", partitions=PARTITIONS, every_s=0.2)
    await dead.start()
    await alive.start()
    try:

        async def shared() -> bool:
            return bool(alive.active) and bool(dead.active) and held([alive, dead]) == list(range(PARTITIONS))

        await eventually(shared, timeout=10)
        lost = set(dead.active)
        assert dead._task is not None
        dead._task.cancel()  # it dies: no more renewals, nothing given back
        with contextlib.suppress(asyncio.CancelledError):
            await dead._task
        loop = asyncio.get_running_loop()
        died = loop.time()

        async def moved() -> bool:
            return alive.active == set(range(PARTITIONS))

        await eventually(moved, timeout=LEASE_TTL_S + 10)
        assert loop.time() - died >= LEASE_TTL_S * 0.6, "taken only once the dead replica's leases lapsed"
        assert all(not dead.owns(str(p)) for p in range(100)), "the dead replica counts its leases as lost"
        assert lost <= alive.active
    finally:
        await alive.stop()


async def test_follower_reads_every_event_live_and_sync_covers_what_was_stored(bus: Bus, tenant: str) -> None:
    seen: list[str] = []
    follower = Follower(bus, [f"agentos.{tenant}.agent.retired"], lambda e: seen.append(e.data.instance), name="test")
    first = bus.new(AgentRetired(agent="a", instance="before"), tenant=tenant)
    await bus.publish(first)
    await follower.start()
    try:
        assert seen == ["before"], "the catch-up read what was stored"
        for i in range(20):
            await bus.publish(bus.new(AgentRetired(agent="a", instance=f"live-{i}"), tenant=tenant))
        await follower.sync(timeout=10)
        assert seen == ["before", *(f"live-{i}" for i in range(20))], "in log order, each once"
    finally:
        await follower.stop()


def test_a_renewal_period_the_leases_would_not_survive_is_refused(bus: Bus) -> None:
    with pytest.raises(ConfigError, match=re.escape("at most 3.33s")):
        Ownership(bus, "svc", "r0", every_s=5.0)


async def test_follower_catches_up_when_other_subjects_follow_its_last_event(bus: Bus, tenant: str) -> None:
    """A filtered consumer reports how far it has scanned as its delivered stream sequence, which
    runs past the last matching event; the catch-up must still end (it once waited out 300 s)."""
    seen: list[str] = []
    follower = Follower(bus, [f"agentos.{tenant}.agent.retired"], lambda e: seen.append(e.data.instance), name="test")
    await bus.publish(bus.new(AgentRetired(agent="a", instance="mine"), tenant=tenant))
    other = unique("other")
    for i in range(30):  # the log's tail is all on a subject the follower does not read
        await bus.publish(bus.new(AgentRetired(agent="a", instance=f"{i}"), tenant=other))
    try:
        await asyncio.wait_for(follower.start(timeout=20), timeout=25)
        assert seen == ["mine"]
        await follower.sync(timeout=5)  # and again, with nothing new for it at all
    finally:
        await follower.stop()


async def test_an_event_the_follower_cannot_read_yet_is_read_again_not_skipped(
    bus: Bus, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decode that cannot finish now (its payload's store away) holds the follower on that event."""
    from agentos_kernel.exceptions import BusUnavailable

    seen: list[str] = []
    real = bus.decode
    failures = [1]

    async def flaky(data: bytes, headers: dict[str, str] | None = None) -> Any:
        if failures:
            failures.pop()
            raise BusUnavailable("object store did not answer (test)")
        return await real(data, headers)

    monkeypatch.setattr(bus, "decode", flaky)
    await bus.publish(bus.new(AgentRetired(agent="a", instance="first"), tenant=tenant))
    follower = Follower(bus, [f"agentos.{tenant}.agent.retired"], lambda e: seen.append(e.data.instance), name="test")
    try:
        await follower.start(timeout=20)
        assert seen == ["first"], "read again after the failure, not skipped"
    finally:
        await follower.stop()
