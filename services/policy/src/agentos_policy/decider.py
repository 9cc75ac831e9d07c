"""The decision point as a service: evaluate, consult approvals and the budget ledger, remember,
answer, and publish every decision as ``policy.decided``.

The decision event is published right after the reply, in batches with pipelined acks (the caller
does not wait for the log); it carries the decision id the caller received, so the attempt is in
the log even when the answer was a denial. A crash between the reply and the ack loses at most the
facts still queued; an outside action's own ``action.executed`` still records what was done.

A decision that needs the policy store (an approval, a budget reservation) while Postgres is down
is a deny with code ``unavailable`` and the reason "policy store (Postgres) unavailable (…)": fail
closed, but say that it is an outage, which callers wait out (``agentos_kernel.policy``). Such a
deny leaves nothing in the remembered state: it decided nothing about the call.

A model call's reservation is keyed by its ``call_id`` (:func:`reservation_id`): the same call
asked again — after a crash, or after a reply that was lost — finds the reservation it already
holds instead of taking a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any

import asyncpg
from agentos_kernel import Bus, Unavailable
from agentos_kernel.db import unavailable_as
from agentos_kernel.faults import FAULTS
from agentos_kernel.tasks import cancel_and_wait
from agentos_schemas import Event, EventData, derived_event_id, new_event_id
from agentos_schemas.events import GoalEscalated
from agentos_schemas.events.policy import AlertKind, AlertRaised, ApprovalRequested, PolicyDecided
from agentos_schemas.rpc import ApprovalInfo, PolicyDecision, PolicyRequest

from agentos_policy import ledger, store
from agentos_policy.engine import Verdict, agent_name, deny, evaluate
from agentos_policy.model import Policy
from agentos_policy.state import Recorded, State

log = logging.getLogger("agentos.policy")
MAX_BACKGROUND = 10_000
BATCH_WAIT_S = 0.02
STORE = "policy store (Postgres)"
#: How long a decision may wait for the policy store before it is denied as unavailable: under the
#: callers' own timeout (2 s by default), so they hear what is down rather than time out.
STORE_TIMEOUT_S = 1.5


class Decider:
    """Holds the loaded policy and the remembered state; answers decision requests."""

    def __init__(self, bus: Bus, pool: asyncpg.Pool, policy: Policy | None, state: State | None = None) -> None:
        self.bus = bus
        self.pool = pool
        self.policy = policy
        self.state = state or State()
        self.ready = asyncio.Event()
        self.publisher = Publisher(bus)

    @property
    def version(self) -> str:
        """The version of the policy in force (``none`` when none loaded)."""
        return self.policy.version if self.policy else "none"

    async def decide(self, request: PolicyRequest) -> PolicyDecision:
        """Answer one request (see the module docstring)."""
        decision_id = new_event_id()
        policy = self.policy
        if policy is None:
            return await self._finish(request, decision_id, deny("no_policy", "no policy loaded"), None, None)
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), timeout=10)
            except TimeoutError:
                reason = "policy state unavailable (still reading recent decisions from the log)"
                return await self._finish(request, decision_id, deny("unavailable", reason), None, None)
        now = time.time()
        verdict = evaluate(policy, request, self.state, now)
        approval: ApprovalInfo | None = None
        reservation = None
        try:
            # Bounded: a reservation or approval cut off after Postgres committed it is found again
            # when the same call is asked again (both are keyed by the call).
            with unavailable_as(STORE):
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    if verdict.decision == "require_approval":
                        verdict, approval = await self._approval(policy, request, verdict, decision_id)
                    if verdict.decision == "allow" and request.action == "model_call":
                        verdict, reservation = await self._reserve(policy, request, verdict, decision_id)
        except Unavailable as exc:
            log.warning("policy: %s; denying %s %s until it is back", exc, request.action, request.resource)
            return await self._finish(request, decision_id, deny("unavailable", f"{exc}; try again later"), None, None)
        self.state.record(Recorded(decision_id, request, verdict.decision, verdict.data_class, now))
        if verdict.alert is not None:
            await self.alert(request, verdict.alert, verdict.reasons[0], now)
        return await self._finish(request, decision_id, verdict, approval, reservation)

    async def _finish(
        self,
        request: PolicyRequest,
        decision_id: str,
        verdict: Verdict,
        approval: ApprovalInfo | None,
        reservation: str | None,
    ) -> PolicyDecision:
        reply = PolicyDecision(
            decision=verdict.decision,
            code=verdict.code,
            reasons=verdict.reasons,
            policy_version=self.version,
            decision_id=decision_id,
            approval_id=approval.approval_id if approval else None,
            reservation_id=reservation,
            risk=verdict.risk,
        )
        fact = PolicyDecided(
            decision_id=decision_id,
            request=request,
            decision=reply.decision,
            code=reply.code,
            reasons=reply.reasons,
            policy_version=reply.policy_version,
            approval_id=reply.approval_id,
            reservation_id=reservation,
            risk=reply.risk,
        )
        await self.emit(fact, request, decision_id)
        return reply

    async def _approval(
        self, policy: Policy, request: PolicyRequest, verdict: Verdict, decision_id: str
    ) -> tuple[Verdict, ApprovalInfo]:
        key = request.call_id or decision_id
        approval_id = derived_event_id("approval", request.tenant, key)
        tier = policy.tier(verdict.risk or "medium")
        info, created = await store.open_approval(
            self.pool, approval_id, key, request, verdict.risk or "medium", tier, decision_id, dt.datetime.now(dt.UTC)
        )
        if created:
            await self.emit(
                ApprovalRequested(
                    approval_id=approval_id,
                    decision_id=decision_id,
                    request=request,
                    risk=info.risk,
                    needed=info.needed,
                    approver_role=info.approver_role,
                    reasons=verdict.reasons,
                    expires_at=info.expires_at or dt.datetime.now(dt.UTC),
                ),
                request,
                derived_event_id(approval_id, "req"),
            )
            if verdict.escalate:
                await self.escalate(request, f"{verdict.reasons[0]} (approval {approval_id})", policy.escalation.to)
        return _after_approval(verdict, info), info

    async def _reserve(
        self, policy: Policy, request: PolicyRequest, verdict: Verdict, decision_id: str
    ) -> tuple[Verdict, str | None]:
        name = agent_name(request)
        rule = policy.agent(name)
        team = rule.team if rule else "default"
        caps = ledger.caps_for(policy, request.tenant, name, team, dt.datetime.now(dt.UTC))
        if not caps:
            return verdict, None
        held = await ledger.reserve(
            self.pool,
            request.tenant,
            caps,
            reservation_id(request, decision_id),
            request.estimated_cost_usd,
            request.estimated_tokens,
            {
                "agent": name,
                "team": team,
                "goal_id": request.goal_id,
                "task_id": request.task_id,
                "model": request.resource,
            },
            new_id=decision_id,
        )
        if isinstance(held, ledger.Refused):
            return deny("budget", held.reason), None
        return verdict, held

    # -- publishing ------------------------------------------------------------------------------
    async def emit(self, data: EventData, request: PolicyRequest, event_id: str) -> None:
        """Queue a fact about ``request`` for the background publisher (decisions are answered first).

        The event is built without a tracing span of its own: the request carries no trace context,
        and a span per decision would cost more than the decision.
        """
        event = Event(
            id=event_id,
            data=data,
            source=self.bus.source,
            type=data.ce_type(),
            dataschema=data.dataschema(),
            tenant=request.tenant,
            subject=request.task_id or None,
            correlationid=request.goal_id or None,
            principal="service:policy",
        )
        await self.publisher.put(event)

    async def alert(self, request: PolicyRequest, kind: AlertKind, detail: str, now: float) -> None:
        """Raise an alert once per goal, task and kind in a minute."""
        alert_id = derived_event_id(
            "alert", request.tenant, request.goal_id, request.task_id, kind, str(int(now // 60))
        )
        data = AlertRaised(
            alert_id=alert_id,
            kind=kind,
            detail=detail,
            agent=request.agent,
            goal_id=request.goal_id,
            task_id=request.task_id,
            severity="critical" if kind in ("spend_spike", "replan_storm") else "warning",
        )
        await self.emit(data, request, alert_id)

    async def escalate(self, request: PolicyRequest, reason: str, to: str) -> None:
        """Announce ``goal.escalated`` for the request's goal (the thread is the goal's correlation id)."""
        if not request.goal_id:
            return
        data = GoalEscalated(
            goal_id=request.goal_id,
            to=to,
            reason=f"{reason}; task {request.task_id or '-'}, agent {request.agent or '-'}; "
            f"thread: `agentos watch {request.goal_id}`",
        )
        event_id = derived_event_id("escalated", request.tenant, request.goal_id, reason)
        await self.emit(data, request, event_id)

    async def drain(self, timeout: float = 5.0) -> None:
        """Publish what is still queued (bounded), then stop the publisher."""
        await self.publisher.stop(timeout)


class Publisher:
    """Publishes queued events in batches (pipelined acks), in order, off the decision path.

    Until :meth:`start` is called (or after :meth:`stop`) events are published inline.
    """

    def __init__(self, bus: Bus, batch: int = 256) -> None:
        self.bus = bus
        self.batch = batch
        self.queue: asyncio.Queue[Event[Any]] = asyncio.Queue(maxsize=MAX_BACKGROUND)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Publish in the background from now on."""
        self.task = asyncio.create_task(self._run(), name="policy-publisher")

    async def put(self, event: Event[Any]) -> None:
        """Queue ``event`` (or publish it inline when not started)."""
        if self.task is None:
            await self.bus.publish(event)
        else:
            await self.queue.put(event)  # waits when the log falls far behind (back-pressure)

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            await asyncio.sleep(BATCH_WAIT_S)  # gather what the next decisions add: fewer, larger writes
            while len(batch) < self.batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self.bus.publish_many(batch)  # pipelined acks; a lost ack is retried with the same id
            except Exception as exc:  # boundary: the publisher outlives a failed batch
                log.exception("policy: could not publish %d events", len(batch))
                FAULTS.note("publish the policy's decisions", exc, level=logging.DEBUG)  # logged just above
            for _ in batch:
                self.queue.task_done()

    async def stop(self, timeout: float) -> None:
        """Publish what is queued (up to ``timeout``), then stop."""
        if self.task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout)
        await cancel_and_wait(self.task)
        self.task = None


def reservation_id(request: PolicyRequest, decision_id: str) -> str:
    """The reservation a model call holds: derived from its call (tenant, agent, task, call id), so
    asking again for the same call finds it; a request without a call id gets its decision's id."""
    if not request.call_id:
        return decision_id
    return derived_event_id("reservation", request.tenant, agent_name(request), request.task_id, request.call_id)


def _after_approval(verdict: Verdict, info: ApprovalInfo) -> Verdict:
    """Turn an approval's state into the decision for the call that asked for it."""
    if info.status == "approved":
        return Verdict(
            "allow",
            "approved",
            (*verdict.reasons, f"approved by {', '.join(info.approved_by)}"),
            risk=verdict.risk,
            data_class=verdict.data_class,
        )
    if info.status == "rejected":
        by = f" by {info.rejected_by}" if info.rejected_by else ""
        return Verdict("deny", "rejected", (f"rejected{by}: {info.reason or 'no reason given'}",), risk=verdict.risk)
    if info.status == "expired":
        return Verdict("deny", "expired", (f"approval {info.approval_id} expired: {info.reason}",), risk=verdict.risk)
    waiting = (
        f"waiting for {info.needed - len(info.approved_by)} more approver(s) with role "
        f"{info.approver_role!r} (approval {info.approval_id})"
    )
    return Verdict(
        "require_approval",
        verdict.code,
        (*verdict.reasons, waiting),
        risk=verdict.risk,
        data_class=verdict.data_class,
        escalate=verdict.escalate,
    )
