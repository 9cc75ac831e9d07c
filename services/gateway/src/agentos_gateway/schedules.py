"""Cron schedules: ``schedule.fired`` (and optionally a goal) on each tick, exactly once.

Schedules are YAML files in ``AGENTOS_GATEWAY_SCHEDULES_DIR``::

    schedules:
      - name: weekly-report
        cron: "0 6 * * 1"              # croniter syntax
        timezone: Europe/Paris          # default UTC
        tenant: acme                    # default AGENTOS_TENANT
        goal:                           # optional
          text: "Draft the weekly sales report for the week before {scheduled_for}"
          workflow: weekly-report

Exactly once, across restarts and replicas: each schedule has a record in the
``AGENTOS_GATEWAY_SCHEDULES`` KV bucket with the last tick it fired. On each check the latest
tick due (``<= now``) is compared with it; if newer, the replica *claims* the tick by a
revision-checked update (only one replica's update can succeed), publishes, and marks the record
done. Event ids derive from (tenant, schedule, tick), so a republish is stored once. Ticks
missed while every gateway was down fire **once** on recovery: only the latest due tick fires,
never one per missed tick. A schedule seen for the first time starts from the latest due tick
without firing it. If a replica dies after claiming, another republishes the claimed tick after
:data:`STUCK_S` seconds (the same ids, so at most once within JetStream's 120 s dedup window).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import nats.js.errors
import yaml
from agentos_kernel.faults import FAULTS
from agentos_schemas import Event, derived_event_id
from agentos_schemas.events import GoalSubmitted, Limits
from agentos_schemas.events.ingress import ScheduleFired
from croniter import croniter
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentos_gateway.goals import submitted_event
from agentos_gateway.templates import render

log = logging.getLogger("agentos.gateway.schedules")
STUCK_S = 10.0
Publish = Callable[[list[Event[Any]]], Awaitable[Any]]


class GoalSpec(BaseModel):
    """The goal a trigger submits; ``text`` is a template (see :mod:`agentos_gateway.templates`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    workflow: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)

    def event(self, context: dict[str, Any], *, goal_id: str, tenant: str, principal: str) -> Event[GoalSubmitted]:
        """The ``goal.submitted`` event, its text and inputs filled in from ``context``."""
        data = GoalSubmitted(
            goal_id=goal_id,
            text=str(render(self.text, context)),
            workflow=self.workflow,
            inputs={**render(self.inputs, context)},
            limits=self.limits,
        )
        return submitted_event(data, tenant=tenant, principal=principal)


class ScheduleSpec(BaseModel):
    """One cron schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    cron: str
    timezone: str = "UTC"
    tenant: str | None = None
    goal: GoalSpec | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        ZoneInfo(value)
        return value

    def latest_due(self, now: dt.datetime) -> dt.datetime:
        """The latest tick at or before ``now`` (in UTC)."""
        local = now.astimezone(ZoneInfo(self.timezone)) + dt.timedelta(microseconds=1)
        tick: dt.datetime = croniter(self.cron, local).get_prev(dt.datetime)
        return tick.astimezone(dt.UTC)


def load_schedules(folder: Path | None) -> list[ScheduleSpec]:
    """Every schedule in ``folder``'s ``*.yaml`` files (``schedules: [...]`` or a bare list)."""
    if folder is None:
        return []
    found: list[ScheduleSpec] = []
    for path in sorted(folder.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or []
        items = doc.get("schedules", []) if isinstance(doc, dict) else doc
        try:
            found.extend(ScheduleSpec.model_validate(item) for item in items)
        except ValueError as exc:
            raise ValueError(f"schedule file {path}: {exc}") from None
    names = [(s.tenant, s.name) for s in found]
    if len(names) != len(set(names)):
        raise ValueError(f"schedule names repeat in {folder}")
    return found


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Scheduler:
    """Checks every schedule each ``poll_s`` and fires due ticks (module docs)."""

    def __init__(
        self,
        kv: KeyValue,
        schedules: list[ScheduleSpec],
        publish: Publish,
        *,
        tenant: str,
        clock: Callable[[], dt.datetime] = _now,
        poll_s: float = 1.0,
    ) -> None:
        self.kv = kv
        self.schedules = schedules
        self.publish = publish
        self.tenant = tenant
        self.clock = clock
        self.poll_s = poll_s
        self.fired = 0
        self._known: dict[str, dt.datetime] = {}

    def key(self, spec: ScheduleSpec) -> str:
        """The schedule's record key."""
        return f"{spec.tenant or self.tenant}.{spec.name}"

    async def run(self) -> None:
        """Check forever (cancel to stop); a failing check is logged and retried next poll."""
        while True:
            try:
                await self.check()
            except Exception as exc:  # boundary: the schedules outlive a failing check
                log.exception("schedule check failed; retrying")
                FAULTS.note("check the schedules", exc)
            await asyncio.sleep(self.poll_s)

    async def check(self) -> int:
        """Fire every schedule whose latest due tick has not fired yet; returns how many fired."""
        now = self.clock()
        fired = 0
        for spec in self.schedules:
            latest = spec.latest_due(now)
            known = self._known.get(self.key(spec))
            if known is None or latest > known:
                fired += await self._check_one(spec, latest, now)
        return fired

    async def _check_one(self, spec: ScheduleSpec, latest: dt.datetime, now: dt.datetime) -> int:
        key = self.key(spec)
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await self.kv.create(key, _record(latest, "done", now))
            self._known[self.key(spec)] = latest
            return 0
        record = json.loads(entry.value or b"{}")
        last = dt.datetime.fromisoformat(record["last"])
        if record.get("state") == "firing":
            if now.timestamp() - record.get("at", 0) > STUCK_S:
                await self._fire(spec, last, entry.revision or 0, now)
            return 0
        if latest <= last:
            self._known[self.key(spec)] = last
            return 0
        try:
            revision = await self.kv.update(key, _record(latest, "firing", now), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return 0  # another replica claimed this tick
        await self._fire(spec, latest, revision, now)
        return 1

    async def _fire(self, spec: ScheduleSpec, tick: dt.datetime, revision: int, now: dt.datetime) -> None:
        tenant = spec.tenant or self.tenant
        stamp = tick.isoformat()
        events: list[Event[Any]] = []
        goal_id = None
        if spec.goal is not None:
            goal_id = derived_event_id("schedule-goal", tenant, spec.name, stamp)
            context = {"schedule": spec.name, "scheduled_for": stamp, "tenant": tenant}
            events.append(spec.goal.event(context, goal_id=goal_id, tenant=tenant, principal=f"schedule:{spec.name}"))
        data = ScheduleFired(schedule=spec.name, cron=spec.cron, scheduled_for=tick, goal_id=goal_id)
        events.insert(
            0,
            Event(
                data=data,
                id=derived_event_id("schedule", tenant, spec.name, stamp),
                source="gateway",
                type=data.ce_type(),
                tenant=tenant,
                subject=f"schedule/{spec.name}",
                dataschema=data.dataschema(),
                correlationid=goal_id,
                principal=f"schedule:{spec.name}",
            ),
        )
        await self.publish(events)
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await self.kv.update(self.key(spec), _record(tick, "done", now), last=revision)
        self._known[self.key(spec)] = tick
        self.fired += 1
        log.info("schedule %s fired for %s", spec.name, stamp)


def _record(tick: dt.datetime, state: str, now: dt.datetime) -> bytes:
    return json.dumps({"last": tick.isoformat(), "state": state, "at": now.timestamp()}).encode()
