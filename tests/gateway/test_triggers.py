"""Schedules (durable across restarts, once across replicas) and KPI rules on a synthetic stream
with known answers (event times come from the CloudEvent `time`, so hours pass in a second)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import asyncpg
from agentos_gateway import kv as buckets
from agentos_gateway.kpi import load_rules
from agentos_gateway.kpi_engine import KpiEngine
from agentos_gateway.schedules import Scheduler, load_schedules
from agentos_kernel import Bus
from agentos_kernel.testing import eventually, unique
from agentos_schemas import Event
from agentos_schemas.events import GoalSubmitted
from agentos_schemas.events.ingress import KpiTriggered, RefundRecorded, ScheduleFired

from tests.gateway.conftest import stored

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 20, tzinfo=UTC)


def publisher(bus: Bus) -> Any:
    async def publish(events: list[Event[Any]]) -> None:
        await asyncio.gather(*(bus.publish(e) for e in events))

    return publish


SCHEDULES = """
schedules:
  - name: {name}
    cron: "*/5 * * * *"
    tenant: {tenant}
    goal: {{text: "Report for {{scheduled_for}}", inputs: {{tick: "{{scheduled_for}}"}}}}
"""


def at(minute: int) -> dt.datetime:
    return T0.replace(hour=10, minute=minute)


async def test_missed_ticks_fire_once_after_a_restart_and_never_twice_with_two_replicas(
    bus: Bus, tenant: str, tmp_path: Path
) -> None:
    kv = await buckets.bucket(bus, buckets.SCHEDULES)
    (tmp_path / "s.yaml").write_text(SCHEDULES.format(name=unique("s"), tenant=tenant))
    [spec] = load_schedules(tmp_path)
    now = [at(2)]

    def scheduler() -> Scheduler:  # a fresh instance is a restarted (or another) gateway
        return Scheduler(kv, [spec], publisher(bus), tenant="default", clock=lambda: now[0])

    first = scheduler()
    assert await first.check() == 0  # first sight: starts from 10:00 without firing it
    now[0] = at(7)
    assert await first.check() == 1 and await first.check() == 0  # 10:05
    now[0] = at(31)  # every gateway was down through 10:10 ... 10:30
    restarted = scheduler()
    assert await restarted.check() == 1 and await restarted.check() == 0  # 10:30 only
    now[0] = at(36)
    assert sum(await asyncio.gather(*(s.check() for s in (scheduler(), scheduler(), restarted)))) == 1
    # A replica died after claiming 10:40 (its record is left "firing"): another one publishes it.
    stuck = {"last": at(40).isoformat(), "state": "firing", "at": at(40).timestamp()}
    await kv.put(f"{tenant}.{spec.name}", json.dumps(stuck).encode())
    now[0] = at(41)
    await scheduler().check()
    assert await scheduler().check() == 0
    ticks = await stored(bus, f"agentos.{tenant}.schedule.fired", wait_for=4)
    assert [e.data.scheduled_for.strftime("%H:%M") for e in ticks] == ["10:05", "10:30", "10:35", "10:40"]
    assert all(isinstance(e.data, ScheduleFired) for e in ticks)
    goals = await stored(bus, f"agentos.{tenant}.goal.submitted", wait_for=4)
    assert goals[0].data.text == "Report for 2026-11-20T10:05:00+00:00"
    assert [e.data.goal_id for e in goals] == [e.data.goal_id for e in ticks]


def refunds(tenant: str, counts: list[int], *, amount: int = 2000, currency: str = "USD") -> list[Event[Any]]:
    events = []
    for hour, n in enumerate(counts):
        for i in range(n):
            data = RefundRecorded(
                system="synthetic",
                refund_id=f"{tenant}-{currency}-{hour}-{i}",
                amount=amount,
                currency=currency,
            )
            events.append(
                Event(
                    data=data,
                    source="tests",
                    type=data.ce_type(),
                    tenant=tenant,
                    time=T0 + dt.timedelta(hours=hour, minutes=i),
                )
            )
    return events


RULES = """
rules:
  - name: refund-spike
    event: refund.recorded
    threshold: 5
    consecutive: 3
    window: 1h
    tenant: {tenant}
    goal: {{text: "Refunds over {{threshold}}/h for {{consecutive}}h ({{values}})", workflow: returns}}
  - name: refund-amount
    event: refund.recorded
    measure: sum:amount
    where: {{currency: USD}}
    threshold: 10000
    consecutive: 2
    tenant: {tenant}
"""


async def run_rules(bus: Bus, pool: asyncpg.Pool, tenant: str, path: Path, events: list[Event[Any]]) -> list[Any]:
    """Feed ``events`` through a KPI engine with the rules in ``path``; the kpi.triggered payloads."""
    engine = await KpiEngine(pool, bus, load_rules(path), publisher(bus), durable=unique("kpi")).start()
    try:
        await bus.publish_many(events)
        await eventually(lambda: _count(bus, f"agentos.{tenant}.kpi.triggered", 4), timeout=20)
        await engine.handle(events[0])  # a redelivery changes nothing (processed_events)
        await asyncio.sleep(0.3)
    finally:
        await engine.stop()
    return [e.data for e in await stored(bus, f"agentos.{tenant}.kpi.triggered")]


async def _count(bus: Bus, subject: str, n: int) -> bool:
    return len(await stored(bus, subject, timeout=0)) >= n


async def test_kpi_rules_fire_once_per_streak_with_the_numbers_that_tripped_them(
    bus: Bus, pool: asyncpg.Pool, tenant: str, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES.format(tenant=tenant))
    counts = [2, 6, 7, 8, 1, 6, 6, 9, 9, 0, 3]  # refunds per hour from T0
    others = refunds(unique("t"), [9, 9, 9, 9])  # another tenant: not counted
    euros = refunds(tenant, [0] * 10 + [9], currency="EUR")  # hour 10 counts 12 but has no streak; not summed
    stream = refunds(tenant, counts) + others + euros
    triggered = await run_rules(bus, pool, tenant, tmp_path / "rules.yaml", stream)
    spikes = [t for t in triggered if isinstance(t, KpiTriggered) and t.rule == "refund-spike"]
    sums = [t for t in triggered if isinstance(t, KpiTriggered) and t.rule == "refund-amount"]
    assert [[w.value for w in t.windows] for t in spikes] == [[6, 7, 6], [6, 6, 6]]
    assert [t.windows[0].start.hour for t in spikes] == [1, 5]
    assert [[w.value for w in t.windows] for t in sums] == [[12_000, 12_000], [12_000, 12_000]]
    assert [t.windows[0].start.hour for t in sums] == [1, 5] and len(triggered) == 4
    goals = await stored(bus, f"agentos.{tenant}.goal.submitted", wait_for=2)
    assert sorted(g.data.goal_id for g in goals) == sorted(t.goal_id for t in spikes if t.goal_id)
    assert all(isinstance(g.data, GoalSubmitted) and g.data.workflow == "returns" for g in goals)
    assert "(6, 7, 6)" in next(g.data.text for g in goals if g.data.goal_id == spikes[0].goal_id)
