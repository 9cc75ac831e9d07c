"""``agentos policy simulate``: replay recorded decisions against another policy version.

Every ``policy.decided`` since a time is read back from the log, in order; each recorded request is
evaluated by the candidate policy with the state the candidate itself would have built (what the
goal touched, repeated calls, rate windows), and every decision that would change is listed.

Budgets are simulated too (:class:`Balances`): the ledger is rebuilt from the log itself, from the
start of the month that contains ``--since`` (the longest budget period), so every request meets
the day and month balances it would have met. An allowed model call holds its estimate on the
agent's, its team's and its tenant's counters; the ``budget.settled`` of its reservation replaces
the estimate with the real cost (a call never settled stays charged at its estimate, as the
ledger's expiry does). Before ``--since`` the recorded decisions are charged as they were; from
``--since`` on the candidate's own decisions are, and an allowed model call is denied when it
would take a counter past one of the candidate's caps — the check ``ledger.reserve`` makes.

Not simulated: replan storms (``goal.planned`` is not replayed). A recorded approval outcome
(approved, rejected, expired) counts as ``require_approval``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import nats.errors
from agentos_kernel import Bus
from agentos_schemas import EVENTS_STREAM, Event, EventData, codec
from agentos_schemas.events.policy import BudgetSettled, PolicyDecided
from agentos_schemas.money import usd
from agentos_schemas.rpc import PolicyRequest
from agentos_schemas.subjects import parse_type
from nats.js import api

from agentos_policy import ledger
from agentos_policy.engine import Verdict, agent_name, deny, evaluate
from agentos_policy.model import Policy
from agentos_policy.state import Recorded, State

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
    """How many decisions were replayed, which would change (how many of them on budgets), and
    from when the budget balances were rebuilt."""

    read: int = 0
    budget_changes: int = 0
    ledger_from: dt.datetime | None = None
    changes: list[Change] = field(default_factory=list)


#: (tenant, scope, name, period, period key): one counter of the ledger.
Counter = tuple[str, str, str, str, str]


@dataclass
class Balances:
    """The budget ledger rebuilt from the log: used plus reserved USD and tokens per counter.

    Every counter an allowed model call touches is kept (agent, team and tenant, day and month),
    whether a cap applies to it or not, so a cap the candidate adds is checked against real spend.
    """

    usd: dict[Counter, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    tokens: dict[Counter, int] = field(default_factory=lambda: defaultdict(int))
    held: dict[str, tuple[tuple[Counter, ...], Decimal, int]] = field(default_factory=dict)
    """Reservations not settled yet: decision id -> (counters, estimate USD, estimate tokens)."""
    early: dict[str, BudgetSettled] = field(default_factory=dict)
    """Settlements read before their decision: the decision fact is published after the reply, in
    batches, so a quick settlement can precede it in the log."""

    @staticmethod
    def counters(policy: Policy, request: PolicyRequest, at: dt.datetime) -> tuple[Counter, ...]:
        name = agent_name(request)
        rule = policy.agent(name)
        names = {"agent": name, "team": rule.team if rule else "default", "tenant": request.tenant}
        keys = ledger.period_keys(at)
        return tuple(
            (request.tenant, scope, names[scope], period, keys[period])
            for scope in ("agent", "team", "tenant")
            for period in ("day", "month")
        )

    def check(self, policy: Policy, request: PolicyRequest, at: dt.datetime) -> str | None:
        """Why ``request`` would be refused by the candidate's caps now (None: it fits)."""
        name = agent_name(request)
        rule = policy.agent(name)
        caps = ledger.caps_for(policy, request.tenant, name, rule.team if rule else "default", at)
        amount, tokens = Decimal(str(request.estimated_cost_usd)), request.estimated_tokens
        for cap in caps:  # the same test and words as ledger.reserve
            key = (request.tenant, *cap.key)
            used = self.usd.get(key, Decimal(0))
            if cap.usd is not None and used + amount > Decimal(str(cap.usd)):
                return (
                    f"budget: {cap.key[0]} {cap.key[1]!r} has {usd(used)} of {usd(cap.usd)} per "
                    f"{cap.key[2]} used or reserved; this call needs {usd(request.estimated_cost_usd)}"
                )
            held = self.tokens.get(key, 0)
            if cap.tokens is not None and held + tokens > cap.tokens:
                return (
                    f"budget: {cap.key[0]} {cap.key[1]!r} has {held} of {cap.tokens} tokens per "
                    f"{cap.key[2]} used or reserved; this call needs {tokens}"
                )
        return None

    def hold(self, policy: Policy, decision_id: str, request: PolicyRequest, at: dt.datetime) -> None:
        """Charge an allowed model call's estimate until its settlement arrives."""
        keys = self.counters(policy, request, at)
        amount = Decimal(str(request.estimated_cost_usd))
        for key in keys:
            self.usd[key] += amount
            self.tokens[key] += request.estimated_tokens
        self.held[decision_id] = (keys, amount, request.estimated_tokens)
        settled = self.early.pop(decision_id, None)
        if settled is not None:
            self.settle(settled)

    def settle(self, data: BudgetSettled) -> None:
        """Replace a held estimate with the real cost (kept for later if its decision is not read yet)."""
        found = self.held.pop(data.reservation_id, None)
        if found is None:
            self.early[data.reservation_id] = data
            return
        keys, amount, tokens = found
        cost = Decimal(str(data.cost_usd))
        for key in keys:
            self.usd[key] += cost - amount
            self.tokens[key] += data.tokens - tokens


def month_start(when: dt.datetime) -> dt.datetime:
    """The first instant (UTC) of the month containing ``when``: where the budget balances start."""
    return when.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def read_many(bus: Bus, subjects: list[str], since: dt.datetime) -> AsyncIterator[Event[Any]]:
    """Stored events on any of ``subjects`` from ``since`` up to the end of the log as it is now,
    in log order (one ephemeral pull consumer with several filters)."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    end = info.state.last_seq
    if not end:
        return
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        filter_subjects=subjects,
        mem_storage=True,
        inactive_threshold=60.0,
        deliver_policy=api.DeliverPolicy.BY_START_TIME,
        opt_start_time=since,
    )
    psub = await bus.js.pull_subscribe(subject="", stream=EVENTS_STREAM, config=config)
    try:
        while True:
            try:
                msgs = await psub.fetch(256, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                return
            for msg in msgs:
                with contextlib.suppress(codec.DecodeError):
                    yield await bus.decode(msg.data, msg.headers)
                if msg.metadata.sequence.stream >= end or msg.metadata.num_pending == 0:
                    return
    finally:
        await psub.unsubscribe()


async def read_log(bus: Bus, subject: str, since: dt.datetime | None = None) -> AsyncIterator[Event[Any]]:
    """Stored events on ``subject`` from ``since`` (or the start) up to the end of the log as it is now."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    end = info.state.last_seq
    if since is None:
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
    else:
        config = api.ConsumerConfig(opt_start_time=since, deliver_policy=api.DeliverPolicy.BY_START_TIME)
    sub = await bus.js.subscribe(subject, stream=EVENTS_STREAM, ordered_consumer=True, config=config)
    try:
        while end:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                return
            with contextlib.suppress(codec.DecodeError):
                yield await bus.decode(msg.data, msg.headers)
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
    start = month_start(since)
    report, state, balances = Report(changes=[], ledger_from=start), State(), Balances()
    subjects = [f"agentos.{tenant or '*'}.policy.decided", f"agentos.{tenant or '*'}.budget.settled"]
    async for event in read_many(bus, subjects, start):
        data = event.data
        if isinstance(data, BudgetSettled):
            balances.settle(data)
            continue
        if not isinstance(data, PolicyDecided):
            continue
        at = event.time or dt.datetime.now(dt.UTC)
        req = data.request
        if at < since:  # before the window: charged as it was decided
            if data.decision == "allow" and req.action == "model_call":
                balances.hold(policy, data.decision_id, req, at)
            continue
        report.read += 1
        verdict = evaluate(policy, req, state, at.timestamp())
        if verdict.decision == "allow" and req.action == "model_call":
            refused = balances.check(policy, req, at)
            if refused is None:
                balances.hold(policy, data.decision_id, req, at)
            else:
                verdict = deny("budget", refused)
        state.record(Recorded(data.decision_id, req, verdict.decision, verdict.data_class, at.timestamp()))
        before = _before(data)
        if before != verdict.decision:
            report.budget_changes += "budget" in (data.code, verdict.code)
            report.changes.append(_change(data, at, before, verdict))
    return report


def _change(data: PolicyDecided, at: dt.datetime, before: str, verdict: Verdict) -> Change:
    req = data.request
    return Change(
        data.decision_id,
        at,
        req.tenant,
        req.agent or req.principal,
        req.action,
        req.tool or req.resource,
        f"{before} ({data.code})",
        f"{verdict.decision} ({verdict.code})",
        verdict.reasons,
    )
