"""The policy service: the decision point for every model call, tool call, memory write and
outside action, with approvals, budgets, rate limits and loop detection.

Answers (queue group ``policy``): ``agentosrpc.policy.decide``, ``.approval``, ``.approvals``,
``.vote``, ``.budget``. Consumes (durable ``policy``): ``budget.settlement_requested`` (settles the
ledger, publishes ``budget.settled``) and ``task.completed`` (the settlement it carries for its last
model call is settled the same way; a human's takeover — principal and agent ``user:<name>`` —
cancels the task's approvals; a low-confidence answer escalates the goal).
Publishes ``policy.decided``, ``approval.requested/voted/decided``, ``alert.raised``,
``goal.escalated``. A 1 s tick escalates or expires overdue approvals, charges reservations never
settled, and reloads edited policy files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

from agentos_kernel import ConfigError, KernelSettings
from agentos_kernel.db import postgres_down
from agentos_kernel.faults import FAULTS
from agentos_kernel.service import ServiceContext, run_service
from agentos_kernel.tasks import cancel_and_wait
from agentos_schemas import Event, derived_event_id, new_event_id
from agentos_schemas import rpc as r
from agentos_schemas.events import TaskCompleted
from agentos_schemas.events.policy import BudgetSettled, BudgetSettlementRequested
from pydantic_settings import SettingsConfigDict

from agentos_policy import humans, ledger, schema, store
from agentos_policy.decider import Decider
from agentos_policy.feed import Feed
from agentos_policy.model import Policy, PolicyError, default_policy_dir, fingerprint, load_policy
from agentos_policy.responder import serve

NAME = "policy"
DURABLE = "policy"
FILTERS = ["agentos.*.budget.settlement_requested", "agentos.*.task.completed"]
log = logging.getLogger("agentos.policy")


class PolicySettings(KernelSettings):
    """``AGENTOS_*`` settings of the policy service."""

    model_config = SettingsConfigDict(env_prefix="AGENTOS_", extra="ignore", use_attribute_docstrings=True)

    policy_dir: Path | None = None
    """Folder with policy.yaml (and tests.yaml); default: the policy shipped with AgentOS."""
    policy_memory_hours: float = 24.0
    """How far back decisions are read on start (sequence rules, loops, rate limits)."""
    policy_reservation_ttl_s: float = 3600.0
    """A reservation not settled within this is charged at its estimate."""


def load_or_none(folder: Path) -> Policy | None:
    """The policy in ``folder``, or None (every request is then denied: "no policy loaded")."""
    try:
        return load_policy(folder)
    except PolicyError as exc:
        log.error("policy: %s — denying every request until it is fixed", exc)
        return None


def _takeover(event: Event[Any], data: TaskCompleted) -> bool:
    """A human's takeover: the human is the agent (``agentos takeover`` and the gateway publish it so,
    and the orchestrator reads it so). An agent's answer in a goal a human submitted carries the
    human's principal too, and is an agent's answer."""
    principal = event.principal or ""
    return principal.startswith("user:") and data.agent == principal


class PolicyService:
    """Wires the decider, the state feed, the consumer, the responders and the tick."""

    def __init__(self, ctx: ServiceContext, settings: PolicySettings) -> None:
        if ctx.pool is None:
            raise ConfigError("the policy service needs a database: start it with database=True")
        self.ctx = ctx
        self.pool = ctx.pool
        self.settings = settings
        self.folder = settings.policy_dir or default_policy_dir()
        self.stamp = fingerprint(self.folder) if self.folder.is_dir() else ()
        self.decider = Decider(ctx.bus, self.pool, load_or_none(self.folder))

    async def start(self) -> None:
        """Migrate, record caps, catch up, then consume and answer."""
        await schema.migrate_schema(self.pool)
        await self._record_caps()
        feed = Feed(self.decider, self.settings.policy_memory_hours)
        await feed.start()
        self.ctx.closers.append(feed.stop)
        await self.ctx.consume(
            DURABLE,
            FILTERS,
            self.handle,
            concurrency=8,
            types={BudgetSettlementRequested.ce_type(), TaskCompleted.ce_type()},
        )
        self.decider.publisher.start()
        await self._serve()
        ticker = asyncio.create_task(self.tick())

        async def stop_ticker() -> None:
            await cancel_and_wait(ticker)

        self.ctx.closers.append(stop_ticker)
        self.ctx.closers.append(self.decider.drain)
        self.ctx.status["policy_version"] = self.decider.version
        self.ctx.status["policy_dir"] = str(self.folder.resolve())  # `agentos policy simulate` reads it

    async def _serve(self) -> None:
        d, pool = self.decider, self.pool

        def failed(message: str) -> r.PolicyDecision:
            return r.PolicyDecision(
                decision="deny", code="error", reasons=(message,), decision_id=new_event_id(), policy_version=d.version
            )

        async def approval(q: r.ApprovalQuery) -> r.ApprovalReply:
            info = await store.get(pool, q.approval_id)
            return r.ApprovalReply(approval=info, error=None if info else f"no approval {q.approval_id!r}")

        async def approvals(q: r.ApprovalList) -> r.ApprovalListReply:
            return r.ApprovalListReply(approvals=tuple(await store.listing(pool, q.tenant, q.status)))

        async def budget(q: r.BudgetQuery) -> r.BudgetReport:
            lines = await ledger.report(pool, q.tenant, dt.datetime.now(dt.UTC))
            return r.BudgetReport(lines=tuple(lines), policy_version=d.version)

        routes: list[tuple[str, Any, Any, Any]] = [
            (r.POLICY_DECIDE, r.PolicyRequest, d.decide, failed),
            (r.POLICY_APPROVAL, r.ApprovalQuery, approval, lambda m: r.ApprovalReply(error=m)),
            (r.POLICY_APPROVALS, r.ApprovalList, approvals, lambda m: r.ApprovalListReply(error=m)),
            (r.POLICY_VOTE, r.ApprovalVote, lambda q: humans.vote(d, q), lambda m: r.ApprovalReply(error=m)),
            (r.POLICY_BUDGET, r.BudgetQuery, budget, lambda m: r.BudgetReport(error=m)),
        ]
        for subject, request_type, handler, error in routes:
            sub = await serve(self.ctx.bus, subject, request_type, handler, queue=NAME, error_reply=error)
            self.ctx.closers.append(sub.unsubscribe)

    async def handle(self, event: Event[Any]) -> None:
        """Settle a reservation, or react to a task's completion (takeover, low confidence)."""
        data = event.data
        if isinstance(data, BudgetSettlementRequested):
            await self._settle(event, data.reservation_id, data.cost_usd, data.tokens, data.agent, data.goal_id)
        elif isinstance(data, TaskCompleted):
            if data.settlement is not None:  # a takeover's agent is a person: it matches no reservation
                s = data.settlement
                await self._settle(
                    event, s.reservation_id, s.cost_usd, s.tokens, data.agent, data.goal_id, task_id=data.task_id
                )
            await self._completed(event, data)

    async def _settle(
        self,
        event: Event[Any],
        reservation_id: str,
        cost_usd: float,
        tokens: int,
        agent: str,
        goal_id: str,
        *,
        task_id: str | None = None,
    ) -> None:
        """Settle a reservation in the ledger and publish ``budget.settled`` (a settlement carried on
        ``task.completed`` names its task: only that task's agent's reservation is settled)."""
        pool = self.pool
        key, principal = event.id, None
        if task_id is None:
            done = await ledger.settle(pool, key, reservation_id, cost_usd, tokens)
        else:  # budget.settled names the agent, as it does when the agent requests the settlement
            key, principal = ledger.task_settlement_id(event.id, reservation_id), f"agent:{agent}"
            done = await ledger.settle_task(pool, key, reservation_id, cost_usd, tokens, event.tenant, task_id, agent)
        if done is None:  # settled before, by this very event? then its budget.settled may be missing
            done = await ledger.settled_by(pool, key, reservation_id)
        if done is not None:  # published again on a redelivery: the derived id stores it once
            await self.ctx.bus.publish(
                self.ctx.bus.new(
                    BudgetSettled(
                        reservation_id=reservation_id,
                        estimated_usd=done.estimated_usd,
                        cost_usd=cost_usd,
                        estimated_tokens=done.estimated_tokens,
                        tokens=tokens,
                        agent=agent,
                        goal_id=goal_id,
                    ),
                    cause=event,
                    principal=principal,
                    id=derived_event_id(reservation_id, "settled"),
                )
            )

    async def _completed(self, event: Event[Any], data: TaskCompleted) -> None:
        if _takeover(event, data):
            principal = event.principal or ""
            await humans.taken_over(self.decider, event.tenant, data.task_id, principal.removeprefix("user:"))
            return
        policy = self.decider.policy
        threshold = policy.escalation.low_confidence_below if policy else None
        confidence = data.output.get("confidence")
        if policy is None or threshold is None or not isinstance(confidence, int | float):
            return
        if confidence < threshold:
            request = r.PolicyRequest(
                tenant=event.tenant,
                principal=f"agent:{data.agent}",
                action="model_call",
                resource="output",
                agent=data.agent,
                goal_id=data.goal_id,
                task_id=data.task_id,
            )
            reason = f"low confidence {confidence:.2f} (below {threshold:.2f}) in step {data.step_id!r}"
            await self.decider.escalate(request, reason, policy.escalation.to)
            await self.decider.alert(request, "low_confidence", reason, time.time())

    async def tick(self) -> None:
        """Approval deadlines every second; policy reload, stale reservations and eviction less often."""
        n = 0
        while True:
            await asyncio.sleep(1.0)
            n += 1
            try:
                await humans.expire_due(self.decider)
                if n % 2 == 0:
                    await self._maybe_reload()
                if n % 60 == 0:
                    await ledger.expire_reservations(self.pool, self.settings.policy_reservation_ttl_s)
                    self.decider.state.evict(time.time())
            except Exception as exc:  # boundary: the tick outlives any failure
                # Counted every time; logged below (with its traceback), or every 10 s while Postgres is down.
                FAULTS.note("the policy's tick (approvals, reload, reservations)", exc, level=logging.DEBUG)
                if not postgres_down(exc):
                    log.exception("policy: tick failed")
                elif n % 10 == 0:
                    log.warning(
                        "policy: approvals and reservations wait: policy store (Postgres) unavailable (%s)",
                        type(exc).__name__,
                    )

    async def _maybe_reload(self) -> None:
        stamp = fingerprint(self.folder) if self.folder.is_dir() else ()
        if stamp == self.stamp:
            return
        self.stamp = stamp
        policy = load_or_none(self.folder)
        if policy is None:
            return  # keep deciding with the last good version
        self.decider.policy = policy
        self.ctx.status["policy_version"] = policy.version
        await self._record_caps()
        log.info("policy: loaded version %s from %s", policy.version, self.folder)

    async def _record_caps(self) -> None:
        policy = self.decider.policy
        if policy is not None:
            await ledger.record_caps(self.pool, policy.version, [c.model_dump() for c in policy.budgets])


async def setup(ctx: ServiceContext) -> None:
    """Migrate, load the policy, catch up on recent decisions, then answer and consume."""
    await PolicyService(ctx, PolicySettings()).start()


async def main(settings: KernelSettings) -> None:
    """Run the policy service until SIGTERM/SIGINT."""
    await run_service(NAME, setup, settings, database=True)


__all__ = ["DURABLE", "FILTERS", "NAME", "PolicyService", "PolicySettings", "main", "setup"]
