"""``agentos policy simulate``: replay recorded decisions against another policy version.

Every ``policy.decided`` since a time is read back from the log, in order; each recorded request is
evaluated by the candidate policy with the state the candidate itself would have built (what the
goal touched, repeated calls, rate windows), and every decision that would change is listed.

Not simulated: budgets (the ledger's balances at the time are not in the events, so recorded
``budget`` denials are reported as kept) and replan storms (``goal.planned`` is not replayed).
A recorded approval outcome (approved, rejected, expired) counts as ``require_approval``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.js import api

from agentos_kernel import Bus
from agentos_policy.engine import evaluate
from agentos_policy.model import Policy
from agentos_policy.state import Recorded, State
from agentos_schemas import EVENTS_STREAM, Event, EventData, codec
from agentos_schemas.events.policy import PolicyDecided
from agentos_schemas.subjects import parse_type

APPROVAL_PATH = {"approved", "rejected", "expired", "pending"}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``30m``, ``24h``, ``7d`` (before now) or an ISO date/time (UTC when no zone is given)."""
    now = now or dt.datetime.now(dt.UTC)
    found = _RELATIVE.match(text.strip())
    if found:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[found.group(2)]
        return now - dt.timedelta(**{unit: float(found.group(1))})
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: use 30m, 24h, 7d or an ISO date/time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Change:
    """One recorded decision the candidate policy would decide differently."""

    decision_id: str
    at: dt.datetime
    tenant: str
    agent: str
    action: str
    resource: str
    before: str
    after: str
    reasons: tuple[str, ...]


@dataclass
class Report:
    """How many decisions were replayed, which would change, and how many were not re-evaluated."""

    read: int = 0
    kept_budget: int = 0
    changes: list[Change] | None = None


async def read_log(bus: Bus, subject: str, since: dt.datetime | None = None) -> AsyncIterator[Event[Any]]:
    """Stored events on ``subject`` from ``since`` (or the start) up to the end of the log as it is now."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    end = info.state.last_seq
    if since is None:
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
    else:
        config = api.ConsumerConfig(opt_start_time=since.isoformat(), deliver_policy=api.DeliverPolicy.BY_START_TIME)
    sub = await bus.js.subscribe(subject, stream=EVENTS_STREAM, ordered_consumer=True, config=config)
    try:
        while end:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                return
            try:
                yield await bus.decode(msg.data, msg.headers)
            except codec.DecodeError:
                pass
            if msg.metadata.sequence.stream >= end or msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def recorded_of(bus: Bus, cls: type[EventData], task_id: str, tenant: str | None = None) -> Event[Any] | None:
    """The last stored event of type ``cls`` about ``task_id``."""
    domain, name, _ = parse_type(cls.ce_type())
    found = None
    async for event in read_log(bus, f"agentos.{tenant or '*'}.{domain}.{name}"):
        if getattr(event.data, "task_id", None) == task_id:
            found = event
    return found


def _before(data: PolicyDecided) -> str:
    return "require_approval" if data.code in APPROVAL_PATH else data.decision


async def simulate(bus: Bus, policy: Policy, since: dt.datetime, tenant: str | None = None) -> Report:
    """Every recorded decision since ``since`` that ``policy`` would decide differently."""
    report, state = Report(changes=[]), State()
    async for event in read_log(bus, f"agentos.{tenant or '*'}.policy.decided", since):
        data: PolicyDecided = event.data
        report.read += 1
        at = (event.time or dt.datetime.now(dt.UTC))
        verdict = evaluate(policy, data.request, state, at.timestamp())
        state.record(Recorded(data.decision_id, data.request, verdict.decision, verdict.data_class,
                              at.timestamp()))
        if data.code == "budget":
            report.kept_budget += 1
            continue
        before = _before(data)
        if before != verdict.decision:
            req = data.request
            report.changes.append(Change(  # type: ignore[union-attr]
                data.decision_id, at, req.tenant, req.agent or req.principal, req.action,
                req.tool or req.resource, f"{before} ({data.code})", f"{verdict.decision} ({verdict.code})",
                verdict.reasons))
    return report
