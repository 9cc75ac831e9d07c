"""Feeding the remembered state from the log: every replica folds every ``policy.decided`` (its own
and the other replicas'), ``goal.planned`` (replan storms) and goal endings (forget the goal).

One ephemeral pull consumer starting ``memory_hours`` back is both the catch-up after a start and
the live feed (other replicas' decisions arrive within ~0.2 s); decisions wait until the
catch-up has reached the end of the log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import nats.errors
from agentos_kernel.faults import FAULTS, contained
from agentos_kernel.tasks import cancel_and_wait
from agentos_schemas import EVENTS_STREAM, Event, codec
from agentos_schemas.events import GoalCompleted, GoalFailed, GoalPlanned
from agentos_schemas.events.policy import PolicyDecided
from agentos_schemas.rpc import PolicyRequest
from nats.js import api

from agentos_policy.decider import Decider
from agentos_policy.state import Recorded

log = logging.getLogger("agentos.policy.feed")
LIVE_PAUSE_S = 0.2
SUBJECTS = ["agentos.*.policy.decided", "agentos.*.goal.planned", "agentos.*.goal.completed", "agentos.*.goal.failed"]


class Feed:
    """Folds the log into the decider's state (see the module docstring)."""

    def __init__(self, decider: Decider, memory_hours: float) -> None:
        self.decider = decider
        self.memory_hours = memory_hours
        self.last_seq = 0
        self.task: asyncio.Task[None] | None = None
        self.psub: Any = None

    async def start(self, catch_up_timeout: float = 30.0) -> None:
        """Start folding and wait (bounded) until the remembered window has been read."""
        self.task = asyncio.create_task(self._run(), name="policy-feed")
        try:
            await asyncio.wait_for(self.decider.ready.wait(), catch_up_timeout)
        except TimeoutError:
            log.warning("policy: state catch-up did not finish in %.0fs; deciding with what was read", catch_up_timeout)
            self.decider.ready.set()

    async def stop(self) -> None:
        """Stop folding and delete the consumer's subscription."""
        await cancel_and_wait(self.task)
        self.task = None
        await self._drop()

    async def _drop(self) -> None:
        if self.psub is not None:
            # ValueError: nats-py's answer for a subscription already gone.
            with contained("unsubscribe the policy feed's consumer", nats.errors.Error, OSError, ValueError):
                await self.psub.unsubscribe()
            self.psub = None

    async def _subscribe(self) -> Any:
        """An ephemeral pull consumer from where the fold stopped (or ``memory_hours`` back)."""
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, filter_subjects=SUBJECTS, inactive_threshold=120.0, mem_storage=True
        )
        if self.last_seq:
            config.deliver_policy, config.opt_start_seq = api.DeliverPolicy.BY_START_SEQUENCE, self.last_seq + 1
        else:
            start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=self.memory_hours)
            config.deliver_policy, config.opt_start_time = api.DeliverPolicy.BY_START_TIME, start
        return await self.decider.bus.js.pull_subscribe(subject="", stream=EVENTS_STREAM, config=config)

    async def _run(self) -> None:
        """Fetch and fold until cancelled; a lost consumer (NATS restart) is made again from the last seen."""
        while True:
            try:
                self.psub = await self._subscribe()
                while True:
                    await self._fetch(self.psub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  (boundary: the feed outlives any failure; it resubscribes)
                FAULTS.note("fold the log into the policy state (resubscribing)", exc)
                await self._drop()
                await asyncio.sleep(0.5)

    async def _fetch(self, psub: Any) -> None:
        # Live, a short poll every LIVE_PAUSE_S takes what piled up in one burst: one wake-up, not one
        # per event (this replica's own decisions are in the feed too).
        live = self.decider.ready.is_set()
        try:
            msgs = await psub.fetch(256, timeout=0.05 if live else 1.0)
        except (TimeoutError, nats.errors.TimeoutError):
            self.decider.ready.set()  # nothing (more) to read: caught up
            msgs = []
        seen = self.decider.state.seen_set
        for msg in msgs:
            self.last_seq = msg.metadata.sequence.stream
            if (msg.headers or {}).get("Nats-Msg-Id") in seen:
                continue  # this replica's own decision, already remembered
            try:
                await self.apply(await self.decider.bus.decode(msg.data, msg.headers))
            except codec.DecodeError:
                pass
            except Exception as exc:  # boundary: one event that cannot be folded stops nothing
                log.exception("policy: could not fold %s", msg.subject)
                FAULTS.note("fold one event into the policy state", exc, level=logging.DEBUG)  # logged just above
            if msg.metadata.num_pending == 0:
                self.decider.ready.set()
        if len(msgs) < 256 and self.decider.ready.is_set():
            await asyncio.sleep(LIVE_PAUSE_S)  # live: fold in small batches, not one fetch per event

    async def apply(self, event: Event[Any]) -> None:
        """Fold one event into the decider's state (and raise a replan-storm alert once)."""
        data, state = event.data, self.decider.state
        at = (event.time or dt.datetime.now(dt.UTC)).timestamp()
        if isinstance(data, PolicyDecided):
            state.record(Recorded(data.decision_id, data.request, data.decision, self._data_class(data), at))
        elif isinstance(data, GoalPlanned):
            memory = state.planned(event.tenant, data.goal_id, data.revision, at)
            policy = self.decider.policy
            if memory is None or policy is None or memory.storm:
                return
            if memory.replans > policy.loops.replans_per_goal:
                memory.storm = True
                request = PolicyRequest(
                    tenant=event.tenant,
                    principal="service:policy",
                    action="model_call",
                    resource="planner",
                    goal_id=data.goal_id,
                )
                await self.decider.alert(
                    request,
                    "replan_storm",
                    f"goal {data.goal_id} re-planned {memory.replans} times "
                    f"(limit {policy.loops.replans_per_goal}); its requests are denied",
                    time.time(),
                )
        elif isinstance(data, GoalCompleted | GoalFailed):
            state.ended(event.tenant, data.goal_id)

    def _data_class(self, data: PolicyDecided) -> str | None:
        policy, tool = self.decider.policy, data.request.tool
        return policy.tool(tool, data.request.classification).data_class if policy is not None and tool else None
