"""Evaluating KPI rules continuously, with their state in Postgres (schema ``gateway``).

A durable consumer (``gateway-kpi``, new events only from its first start) receives the watched
event types one at a time, in log order (so "the numbers that tripped it" are deterministic;
replicas of the gateway share the consumer, and then still fire once per crossing window, but
may see windows in a different order). For each event, in one transaction: record it in
``gateway.processed_events`` (a redelivered event changes nothing), lock the (rule, tenant),
add the event's amount to its window in ``gateway.kpi_windows``, and if that made the window
cross the threshold, look at the neighbouring windows (:func:`agentos_gateway.kpi.streak`). A
firing is recorded in ``gateway.kpi_fired`` (one per crossing window) and published inside the
transaction as ``kpi.triggered`` (and the rule's goal), with ids derived from (rule, tenant,
window): if the publish fails nothing commits and the event is redelivered; a repeated publish
is stored once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from agentos_kernel import Bus
from agentos_kernel.consumer import Consumer
from agentos_kernel.db import Connection, first_time, migrate
from agentos_schemas import Event, derived_event_id
from agentos_schemas.events.ingress import KpiTriggered, KpiWindow
from agentos_schemas.subjects import RAW_PREFIX, is_foreign, parse_type

from agentos_gateway.kpi import KpiRule, streak

log = logging.getLogger("agentos.gateway.kpi")
SCHEMA = "gateway"
DURABLE = "gateway-kpi"
STEPS = [
    """CREATE TABLE {schema}.kpi_windows (
        rule text NOT NULL, tenant text NOT NULL, window_start timestamptz NOT NULL,
        value double precision NOT NULL DEFAULT 0, PRIMARY KEY (rule, tenant, window_start))""",
    """CREATE TABLE {schema}.kpi_fired (
        rule text NOT NULL, tenant text NOT NULL, window_start timestamptz NOT NULL,
        event_id text NOT NULL, fired_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (rule, tenant, window_start))""",
]
Publish = Callable[[list[Event[Any]]], Awaitable[Any]]


class KpiEngine:
    """The rules, their Postgres state and the consumer that feeds them."""

    def __init__(
        self, pool: asyncpg.Pool, bus: Bus, rules: list[KpiRule], publish: Publish, *, durable: str = DURABLE
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.rules = rules
        self.publish = publish
        self.durable = durable
        self.fired = 0
        self.consumer: Consumer | None = None

    def filters(self) -> list[str]:
        """Subjects of the watched event types (every tenant)."""
        subjects = set()
        for rule in self.rules:
            if is_foreign(rule.event):
                subjects.add(f"{RAW_PREFIX}{rule.tenant or '*'}")
                continue
            domain, name, _ = parse_type(rule.event)
            subjects.add(f"agentos.{rule.tenant or '*'}.{domain}.{name}")
        return sorted(subjects)

    async def start(self) -> KpiEngine:
        """Migrate the schema and start the consumer."""
        await migrate(self.pool, SCHEMA, STEPS)
        self.consumer = await self.bus.consumer(
            self.durable,
            self.filters(),
            self.handle,
            types={r.event for r in self.rules},
            deliver_new=True,
            concurrency=1,
        ).start()
        return self

    async def stop(self) -> None:
        """Stop consuming (in-flight events finish)."""
        if self.consumer is not None:
            await self.consumer.stop()

    async def handle(self, event: Event[Any]) -> None:
        """Apply one event to every rule it counts for (module docs)."""
        rules = [r for r in self.rules if r.applies(event)]
        if not rules:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            if not await first_time(conn, SCHEMA, self.durable, event.id):
                return
            for rule in rules:
                await self._apply(conn, rule, event)

    async def _apply(self, conn: Connection, rule: KpiRule, event: Event[Any]) -> None:
        amount = rule.amount(event)
        when = event.time or dt.datetime.now(dt.UTC)
        start = rule.window_start(when)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"kpi:{rule.name}:{event.tenant}")
        new = await conn.fetchval(
            f"INSERT INTO {SCHEMA}.kpi_windows (rule, tenant, window_start, value) VALUES ($1, $2, $3, $4) "
            f"ON CONFLICT (rule, tenant, window_start) DO UPDATE SET value = {SCHEMA}.kpi_windows.value + $4 "
            "RETURNING value",
            rule.name,
            event.tenant,
            start,
            amount,
        )
        if not (new - amount <= rule.threshold < new):
            return
        span = dt.timedelta(seconds=rule.window_s * rule.consecutive)
        rows = await conn.fetch(
            f"SELECT window_start, value FROM {SCHEMA}.kpi_windows WHERE rule = $1 AND tenant = $2 "
            "AND window_start BETWEEN $3 AND $4",
            rule.name,
            event.tenant,
            start - span,
            start + span,
        )
        values = {r["window_start"]: r["value"] for r in rows}
        windows = streak(rule, start, values)
        if windows is None:
            return
        event_id = derived_event_id("kpi", rule.name, event.tenant, start.isoformat())
        inserted = await conn.fetchval(
            f"INSERT INTO {SCHEMA}.kpi_fired (rule, tenant, window_start, event_id) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            rule.name,
            event.tenant,
            start,
            event_id,
        )
        if inserted:
            await self._fire(rule, event, event_id, [(w, values[w]) for w in windows])

    async def _fire(
        self, rule: KpiRule, cause: Event[Any], event_id: str, windows: list[tuple[dt.datetime, float]]
    ) -> None:
        step = dt.timedelta(seconds=rule.window_s)
        goal_id = derived_event_id("kpi-goal", event_id) if rule.goal is not None else None
        data = KpiTriggered(
            rule=rule.name,
            measure=rule.measure,
            event_type=rule.event,
            threshold=rule.threshold,
            consecutive=rule.consecutive,
            goal_id=goal_id,
            windows=tuple(KpiWindow(start=w, end=w + step, value=v) for w, v in windows),
        )
        events: list[Event[Any]] = [
            Event(
                data=data,
                id=event_id,
                source="gateway",
                type=data.ce_type(),
                tenant=cause.tenant,
                subject=f"kpi/{rule.name}",
                dataschema=data.dataschema(),
                correlationid=goal_id,
                causationid=cause.id,
                principal=f"kpi:{rule.name}",
            )
        ]
        if rule.goal is not None and goal_id is not None:
            context = _goal_context(rule, cause.tenant, windows)
            events.append(rule.goal.event(context, goal_id=goal_id, tenant=cause.tenant, principal=f"kpi:{rule.name}"))
        await self.publish(events)
        self.fired += 1
        log.info("KPI rule %s fired for tenant %s: %s", rule.name, cause.tenant, [v for _, v in windows])


def _goal_context(rule: KpiRule, tenant: str, windows: list[tuple[dt.datetime, float]]) -> dict[str, Any]:
    """What the rule's goal template is filled in with: the rule, its threshold and the windows that crossed it."""
    return {
        "rule": rule.name,
        "threshold": f"{rule.threshold:g}",
        "consecutive": rule.consecutive,
        "values": ", ".join(f"{v:g}" for _, v in windows),
        "tenant": tenant,
        "window": rule.window,
        "windows": [{"start": w.isoformat(), "value": v} for w, v in windows],
    }
