"""What the policy service remembers between decisions: a fold of recent ``policy.decided`` and
``goal.planned`` events (its own and other replicas', read back from the log).

The engine reads it for sequence rules (what a goal touched earlier), loop detection (the same
call again and again), rate limits (calls per minute) and spend spikes (model spend per minute).
Pure data and functions; the service feeds it and the simulator folds recorded events into it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict, deque
from dataclasses import dataclass, field

from agentos_schemas.rpc import PolicyRequest

WINDOW_S = 60.0
GOAL_IDLE_S = 24 * 3600.0
_EXP = 1074
_UNIT = 1 << _EXP
"""Every finite float is an integer multiple of ``2**-1074``: sums kept in that unit are exact."""


def call_key(request: PolicyRequest) -> str:
    """Same tool (or resource) with the same arguments: the identity loop detection counts."""
    blob = json.dumps([request.action, request.tool or request.resource, request.args], sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


@dataclass
class GoalMemory:
    """One goal's recent history."""

    data_classes: set[str] = field(default_factory=set)
    tools: set[str] = field(default_factory=set)
    calls_in_goal: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls_in_task: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    call_ids: set[str] = field(default_factory=set)
    """Attempts already counted: the same call asked again (after an approval) is not a repeat."""
    replans: int = 0
    storm: bool = False
    last_seen: float = 0.0


@dataclass
class Recorded:
    """What a decision leaves behind in the state (from the engine, or from a decided event)."""

    decision_id: str
    request: PolicyRequest
    decision: str
    data_class: str | None
    at: float


class SpendWindow:
    """One tenant's model spend (time, usd) in arrival order, with a running sum.

    Entries leave from the front once older than :data:`WINDOW_S` (an entry folded late, with an
    earlier time than the ones before it, leaves when it reaches the front). The sum is kept exactly
    (as an integer in units of ``2**-1074``), so adding and removing never drifts, and a query costs
    the entries that expired, not a pass over the whole minute: :meth:`total` is ``math.fsum`` of
    the costs still in the window (the correctly rounded sum).
    """

    __slots__ = ("_exact", "_nan", "_neg_inf", "_pos_inf", "entries")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, float]] = deque()
        self._exact = 0
        self._pos_inf = self._neg_inf = self._nan = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, at: float, cost: float) -> None:
        """Count ``cost`` reserved at time ``at``."""
        self.entries.append((at, cost))
        self._count(cost, 1)

    def _count(self, cost: float, sign: int) -> None:
        if math.isfinite(cost):
            num, den = cost.as_integer_ratio()  # den is a power of two, at most 2**1074
            self._exact += sign * (num << (_EXP - den.bit_length() + 1))
        elif math.isnan(cost):
            self._nan += sign
        elif cost > 0:
            self._pos_inf += sign
        else:
            self._neg_inf += sign

    def total(self, now: float) -> float:
        """The spend of the entries not older than ``now - WINDOW_S`` (see the class docstring)."""
        entries, cutoff = self.entries, now - WINDOW_S
        while entries and entries[0][0] < cutoff:
            self._count(entries.popleft()[1], -1)
        if not entries:
            self._exact = self._pos_inf = self._neg_inf = self._nan = 0
            return 0.0
        if self._nan or (self._pos_inf and self._neg_inf):
            return math.nan
        if self._pos_inf or self._neg_inf:
            return math.inf if self._pos_inf else -math.inf
        try:
            return self._exact / _UNIT  # int / int is correctly rounded
        except OverflowError:  # beyond the largest float, as a float sum would have become
            return math.inf if self._exact > 0 else -math.inf


@dataclass
class State:
    """Every replica's remembered state: goals, folded decision ids, rate and spend windows."""

    goals: dict[str, GoalMemory] = field(default_factory=dict)
    seen: deque[str] = field(default_factory=lambda: deque(maxlen=50_000))
    seen_set: set[str] = field(default_factory=set)
    rates: dict[tuple[str, str, str, str], deque[float]] = field(default_factory=lambda: defaultdict(deque))
    spend: dict[str, SpendWindow] = field(default_factory=lambda: defaultdict(SpendWindow))

    def goal(self, tenant: str, goal_id: str) -> GoalMemory | None:
        """The goal's memory, if any was recorded."""
        return self.goals.get(f"{tenant}/{goal_id}") if goal_id else None

    def _goal_for(self, tenant: str, goal_id: str, at: float) -> GoalMemory | None:
        if not goal_id:
            return None
        memory = self.goals.setdefault(f"{tenant}/{goal_id}", GoalMemory())
        memory.last_seen = max(memory.last_seen, at)
        return memory

    def record(self, item: Recorded) -> bool:
        """Fold one decision in (once per decision id); False if it was already folded."""
        if item.decision_id in self.seen_set:
            return False
        if len(self.seen) == self.seen.maxlen:
            self.seen_set.discard(self.seen[0])
        self.seen.append(item.decision_id)
        self.seen_set.add(item.decision_id)
        req = item.request
        memory = self._goal_for(req.tenant, req.goal_id, item.at)
        if req.action != "model_call" and memory is not None and not self.repeat_of(memory, req):
            if req.call_id:
                memory.call_ids.add(req.call_id)
            key = call_key(req)
            memory.calls_in_goal[key] += 1
            memory.calls_in_task[(req.task_id, key)] += 1
        if item.decision != "allow":
            return True
        if memory is not None:
            if item.data_class:
                memory.data_classes.add(item.data_class)
            if req.tool:
                memory.tools.add(req.tool)
        self.rates[(req.tenant, req.agent, req.action, req.resource)].append(item.at)
        if req.action == "model_call" and req.estimated_cost_usd:
            self.spend[req.tenant].add(item.at, req.estimated_cost_usd)
        return True

    @staticmethod
    def repeat_of(memory: GoalMemory, request: PolicyRequest) -> bool:
        """Whether ``request`` re-asks an attempt already counted (same call id)."""
        return bool(request.call_id) and request.call_id in memory.call_ids

    def planned(self, tenant: str, goal_id: str, revision: int, at: float) -> GoalMemory | None:
        """Fold a ``goal.planned`` (its revision counts the re-plans)."""
        memory = self._goal_for(tenant, goal_id, at)
        if memory is not None:
            memory.replans = max(memory.replans, revision)
        return memory

    def ended(self, tenant: str, goal_id: str) -> None:
        """Forget a finished goal."""
        self.goals.pop(f"{tenant}/{goal_id}", None)

    def rate(self, tenant: str, agent: str, action: str, resource: str, now: float) -> int:
        """Allowed calls in the last minute by this agent of this action on this resource."""
        times = self.rates.get((tenant, agent, action, resource))
        return _trim(times, now) if times else 0

    def spend_per_minute(self, tenant: str, now: float) -> float:
        """Model spend reserved by ``tenant`` in the last minute."""
        window = self.spend.get(tenant)
        return window.total(now) if window else 0.0

    def evict(self, now: float) -> int:
        """Forget goals idle for a day and empty rate and spend windows; returns goals dropped."""
        stale = [k for k, g in self.goals.items() if now - g.last_seen > GOAL_IDLE_S]
        for key in stale:
            del self.goals[key]
        for key in [k for k, v in self.rates.items() if not _trim(v, now)]:
            del self.rates[key]
        for tenant, window in list(self.spend.items()):
            window.total(now)  # trims
            if not window:
                del self.spend[tenant]
        return len(stale)


def _trim(times: deque[float], now: float) -> int:
    while times and times[0] < now - WINDOW_S:
        times.popleft()
    return len(times)
