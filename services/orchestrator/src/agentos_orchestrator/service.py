"""The orchestrator service: goals become plans, plans become tasks, results become outcomes.

State lives in memory, folded from the log. Every replica reads the whole log (``FOLLOW``: the
facts the orchestrator consumes plus every replica's decisions) through its own
:class:`~agentos_kernel.follow.Follower`, from the start on boot and then live, so each one holds
every goal and every announced agent. Killing a replica loses nothing: ``decide`` re-derives
exactly the commands not yet published, and their deterministic ids make any re-publish a no-op.

Who decides for a goal: its partition's lease holder (:class:`~agentos_kernel.ownership.Ownership`,
goal ids hashed into ``PARTITIONS`` partitions leased among the live replicas). Only the holder
decides, plans (model calls) and publishes for the goal; a replica that takes a partition over first
reads the log up to its end, so it sees every decision the last holder published; a partition is
not given back while a plan for one of its goals is being made. Any number of replicas therefore
completes every goal once: no task is assigned twice and no plan is asked of a model twice.

Deciding runs in one loop, apart from folding: a folded fact marks its goal to be decided, and
the loop decides the marked goals (and, every ``tick_s``, every goal this replica holds: deadlines,
back-off, waiting for a specialist). Its own decisions are folded when they are decided, before
they are published, so their echo from the log changes nothing. What follows from a decision is
decided at once (``settle``): a verdict releases the next step, a plan its first steps, a goal that
ends the capacity its tasks held. Each such round of decisions is published after the acks of the
round it follows from, so the log holds a goal's decisions in the order they were taken; the events
of one round do not depend on each other, and go out pipelined (``publish_many``). A publish that
fails leaves the state counting decisions the log does not hold: the state is folded again from
the log before anything more is decided.

Kill switches: while ``halt.all``, ``halt.tenant.<t>`` or ``halt.workflow.<goal>`` covers a goal,
the orchestrator takes no decision for it — no task is dispatched, nothing is re-planned,
completed or failed — but it keeps folding every fact into its state. When the switch is lifted the
next tick decides again and the goal carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import nats.js.errors
from agentos_kernel import ConfigError, KernelSettings, control
from agentos_kernel.faults import FAULTS
from agentos_kernel.follow import Follower
from agentos_kernel.llm import LLM, ModelRegistry
from agentos_kernel.ownership import Ownership, partition_of
from agentos_kernel.policy import PolicyClient
from agentos_kernel.service import ServiceContext, run_service
from agentos_kernel.tasks import cancel_and_wait
from agentos_schemas import EVENTS_STREAM, Event, derived_event_id
from agentos_schemas.events import (
    GoalEscalated,
    GoalHeld,
    GoalPlanned,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    Usage,
    WorkflowDeclared,
)

from agentos_orchestrator.decide import REVIEW_CAPABILITY, Command, Emit, NeedPlan, decide, fail
from agentos_orchestrator.planner import (
    GovernedModel,
    PlanDenied,
    PlanError,
    Workflow,
    check_intent,
    llm_plan,
    load_workflows,
)
from agentos_orchestrator.settings import OrchestratorSettings
from agentos_orchestrator.state import Goal, World, apply

NAME = "orchestrator"
#: The facts other services state.
FACTS = [
    "agentos.*.goal.submitted",
    "agentos.*.goal.escalated",
    "agentos.*.task.completed",
    "agentos.*.task.failed",
    "agentos.*.agent.*",
]
#: Folded by every replica: the facts and the orchestrators' own decisions.
FOLLOW = [
    *FACTS,
    "agentos.*.goal.planned",
    "agentos.*.goal.held",
    "agentos.*.goal.completed",
    "agentos.*.goal.failed",
    "agentos.*.task.assigned",
    "agentos.*.task.reviewed",
]
#: Goal ids hash into this many partitions, leased among the replicas (the same for every replica).
PARTITIONS = 16
#: Rounds of follow-up decisions taken at once after one event (the tick takes any further ones).
MAX_ROUNDS = 8
Round = list[tuple[Goal, list[Command]]]
log = logging.getLogger("agentos.orchestrator")


class Orchestrator:
    def __init__(self, ctx: ServiceContext, settings: OrchestratorSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.world = World()
        self.lock = asyncio.Lock()
        self.planning: dict[str, asyncio.Task[None]] = {}
        self.workflows: dict[str, Workflow] = load_workflows(settings.workflows_dir)
        self._llm: LLM | None = None
        self.policy = PolicyClient.for_bus(ctx.bus)
        self.follower = Follower(ctx.bus, FOLLOW, self.fold, name=NAME)
        self.ownership = Ownership(
            ctx.bus,
            NAME,
            ctx.instance,
            partitions=PARTITIONS,
            every_s=settings.ownership_every_s,
            on_acquired=self._acquired,
            can_release=self._can_release,
        )
        self.dirty: dict[str, Event[Any]] = {}
        """Goals to decide, each with the event that made it so (the cause of what is decided)."""
        self.freed = False
        self.wake = asyncio.Event()
        self.rebuild = False
        self._decider: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:  # litellm takes seconds to import: pay that at start, not on the first goal
            self._llm = await asyncio.to_thread(lambda: LLM(ModelRegistry.load()))
        except ConfigError as exc:
            log.warning("LLM planner unavailable (declared workflows still run): %s", exc)
        last = await self.follower.start()
        log.info("rebuilt %d goals from the log (up to seq %d)", len(self.world.goals), last)
        await self.declare_workflows()
        with contextlib.suppress(nats.js.errors.NotFoundError):  # the shared durable of earlier versions
            await self.ctx.bus.js.delete_consumer(EVENTS_STREAM, NAME)
        await self.ownership.start()
        self._decider = asyncio.create_task(self._decide_loop())
        self.ctx.closers.append(self.stop)

    async def declare_workflows(self) -> None:
        """State in the log which declared workflows run here and which capabilities they need,
        so submitters can refuse a workflow (or capability) nobody can run before it is submitted."""
        events = []
        for wf in self.workflows.values():
            data = WorkflowDeclared(
                name=wf.name,
                description=wf.description,
                steps=len(wf.steps),
                capabilities=tuple(sorted({s.capability for s in wf.steps})),
            )
            event_id = derived_event_id("workflow", data.model_dump_json())  # the same file, the same id
            events.append(self.ctx.bus.new(data, id=event_id, subject=f"workflow/{wf.name}"))
        if events:
            await self.ctx.bus.publish_many(events)

    def report_held(self) -> None:
        """Put the work held for want of a capability into this instance's health record."""
        held = [
            {
                "goal_id": g.goal_id,
                "tenant": g.tenant,
                "step_id": h.step_id,
                "capability": h.capability,
                "reason": h.reason,
            }
            for g in self.world.goals.values()
            for h in g.held.values()
        ]
        self.ctx.status["held"] = held[:50]
        self.ctx.status["held_total"] = len(held)

    async def stop(self) -> None:
        await asyncio.gather(
            cancel_and_wait(self._decider), *(cancel_and_wait(task) for task in list(self.planning.values()))
        )
        await self.ownership.stop()  # the other replicas take the partitions over
        await self.follower.stop()

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            self._llm = LLM(ModelRegistry.load())
        return self._llm

    def mine(self, goal: Goal) -> bool:
        """Whether this replica decides for ``goal`` (it holds the goal's partition)."""
        return self.ownership.owns(goal.goal_id)

    async def _acquired(self, partitions: list[int]) -> None:
        await self.follower.sync()  # every decision the last holder published is folded first

    def _can_release(self, partition: int) -> bool:
        return not any(partition_of(gid, PARTITIONS) == partition for gid in self.planning)

    def fold(self, event: Event[Any]) -> None:
        """Fold one event of the log; mark its goal to be decided (if it is ours and not our echo)."""
        goal = apply(self.world, event)
        if goal is not None and event.source != NAME and self.mine(goal):
            self.dirty[goal.goal_id] = event
        if goal is None or not goal.active or isinstance(event.data, TaskCompleted | TaskFailed):
            self.freed = True  # capacity may have freed: the goals waiting for a specialist are decided
        self.wake.set()

    async def _decide_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.tick_s):
                    await self.wake.wait()
            self.wake.clear()
            tick = loop.time() >= next_tick
            if tick:
                next_tick = loop.time() + self.settings.tick_s
            try:
                await self._decide_round(tick)
            except Exception as exc:  # boundary: deciding outlives any failure
                log.exception("deciding failed; the state is read again from the log")
                FAULTS.note("decide the goals (the state is read again)", exc, level=logging.DEBUG)  # logged above
                self.rebuild = True

    async def _decide_round(self, tick: bool) -> None:
        if self.rebuild:
            async with self.lock:
                self.world, self.dirty = World(), {}
                await self.follower.restart()
                self.rebuild = False
        async with self.lock:
            causes, self.dirty = self.dirty, {}
            freed, self.freed = self.freed, False
            goals = (
                list(self.world.goals.values())
                if tick
                else [g for gid in causes if (g := self.world.goals.get(gid)) is not None]
            )
            rounds = self.settle(goals, freed=freed)
        self.ctx.status.update(
            goals=len(self.world.goals), partitions_held=sorted(self.ownership.active), log_seq=self.follower.last_seq
        )
        if tick:
            self.report_held()
        await self.execute(rounds, causes)

    def settle(self, goals: list[Goal], *, freed: bool = False) -> list[Round]:
        """Decide ``goals`` (those this replica holds, not halted), fold the decisions, and decide
        again what they lead to, until nothing more is emitted. With ``freed``, or once a goal ends,
        the goals waiting for a specialist are decided too (an index, so the cost follows the number
        of waiting goals, not of every goal seen). Returns the rounds, each depending only on earlier
        ones."""
        rounds: list[Round] = []
        todo = {g.goal_id: g for g in goals}
        for _ in range(MAX_ROUNDS):
            if freed:
                todo.update(
                    (gid, self.world.goals[gid])
                    for gid in list(self.world.waiting)
                    if gid in self.world.goals and gid not in todo
                )
            decided = [(g, self._decide(g)) for g in todo.values() if self.mine(g) and not halted(g)]
            batch = [(g, commands) for g, commands in decided if commands]
            if not batch:
                break
            rounds.append(batch)
            # An assignment or an escalation only takes capacity or marks the goal: it releases no
            # step, so only the goals that decided something else (a verdict) are decided again.
            todo = {
                g.goal_id: g
                for g, commands in batch
                if g.active
                and any(
                    isinstance(c, Emit) and not isinstance(c.data, TaskAssigned | GoalEscalated | GoalHeld)
                    for c in commands
                )
            }
            freed = any(not g.active for g, _ in batch)
        return rounds

    def _decide(self, goal: Goal) -> list[Command]:
        commands = decide(self.world, goal, time.time(), wait_timeout=self.settings.wait_timeout_s)
        for c in commands:
            if isinstance(c, Emit):
                self._fold(goal, c)
        return commands

    def _fold(self, goal: Goal, c: Emit) -> None:
        """Fold our own decision now (the published copy is built in ``execute``)."""
        apply(self.world, Event(data=c.data, id=c.id, source=NAME, type=c.data.ce_type(), tenant=goal.tenant))

    def _event(self, goal: Goal, c: Emit, cause: Event[Any] | None) -> Event[Any]:
        return self.ctx.bus.new(
            c.data,
            id=c.id,
            tenant=goal.tenant,
            subject=f"goal/{goal.goal_id}",
            cause=cause or goal.submitted_event,
            correlationid=goal.submitted_event.correlationid,
        )

    async def execute(self, rounds: list[Round], causes: dict[str, Event[Any]]) -> None:
        """Publish the rounds in order, each one pipelined and acknowledged before the next; then
        start what needs planning. A goal's first events are caused by ``causes[goal]`` (the event
        that made it to be decided), those in a later round by its last event of the round before
        (e.g. the next step's assignment by the verdict that released it)."""
        last = dict(causes)
        for batch in rounds:
            events = []
            caused = dict(last)
            for goal, commands in batch:
                for c in commands:
                    if isinstance(c, Emit):
                        events.append(self._event(goal, c, caused.get(goal.goal_id)))
                        last[goal.goal_id] = events[-1]
            try:
                if events:
                    await self.ctx.bus.publish_many(events)
            except Exception:
                # State already counts these (and later rounds) as published: fold it again from the
                # log before deciding anything more, so nothing is lost.
                self.rebuild = True
                self.wake.set()
                raise
            for goal, commands in batch:
                for c in commands:
                    if isinstance(c, NeedPlan) and goal.goal_id not in self.planning:
                        self.planning[goal.goal_id] = asyncio.create_task(self._plan(goal, c.reason))

    async def _plan(self, goal: Goal, reason: str | None) -> None:
        try:
            command = await self._make_plan(goal, reason)
        finally:
            self.planning.pop(goal.goal_id, None)
        async with self.lock:
            known = self.world.goals.get(goal.goal_id)
            if known is None or not self.mine(known) or self.rebuild:
                return  # ended meanwhile, or handed over (its lease lapsed): the holder decides
            if isinstance(command, Emit):
                self._fold(known, command)
            # The plan (or the failure) is published first; the assignments it leads to after its ack.
            rounds = [[(known, [command])], *self.settle([known], freed=not known.active)]
        try:
            await self.execute(rounds, {})
        except Exception as exc:  # noqa: BLE001  (boundary: ends a plan task; a failed publish set rebuild)
            FAULTS.note("publish a goal's plan and what it leads to", exc)

    async def _make_plan(self, goal: Goal, reason: str | None) -> Command:
        try:
            revision = goal.revision + 1
            usage = Usage()
            if goal.workflow:
                workflow = self.workflows.get(goal.workflow)
                if workflow is None:
                    raise PlanError(f"unknown workflow {goal.workflow!r}; known: {sorted(self.workflows)}")
                steps, planner = workflow.steps, f"workflow:{workflow.name}"
                check_intent(steps, goal.capability)
            else:
                caps = {c for cs in self.world.agents.capabilities.values() for c in cs} - {REVIEW_CAPABILITY}
                chain = [self.settings.planner_model, *self.settings.planner_fallbacks]
                left = goal.submitted_at + goal.limits.deadline_s - time.time()  # approvals wait at most this
                model = GovernedModel(
                    self.llm,
                    self.policy,
                    goal.tenant,
                    goal.goal_id,
                    revision,
                    cause=goal.submitted_event,
                    approval_wait_s=max(left, 1.0),
                )
                steps, calls = await llm_plan(model, chain, goal.text, caps, goal.history, required=goal.capability)
                usage, planner = Usage(calls=tuple(calls)), f"llm:{chain[0]}"
            data = GoalPlanned(
                goal_id=goal.goal_id, revision=revision, steps=tuple(steps), planner=planner, reason=reason, usage=usage
            )
            return Emit(data, derived_event_id(goal.goal_id, "planned", str(revision)))
        except PlanDenied as exc:  # the policy said no (or could not be asked) before a model call
            log.warning("planning %s denied: %s", goal.goal_id, exc)
            return fail(goal, time.time(), exc.code, str(exc))[0]
        except Exception as exc:  # noqa: BLE001  (boundary: a planner that fails ends the goal, saying why)
            log.warning("planning %s failed: %s", goal.goal_id, exc)
            return fail(goal, time.time(), "planner_failed", f"{type(exc).__name__}: {exc}")[0]


def halted(goal: Goal) -> bool:
    """Whether a kill switch (everything, the goal's tenant or the goal itself) pauses ``goal``."""
    work = control.Work(workflow=goal.goal_id, tenant=goal.tenant)
    return control.state().covering(work) is not None


async def setup(ctx: ServiceContext) -> None:
    settings = OrchestratorSettings()
    orchestrator = Orchestrator(ctx, settings)
    await orchestrator.start()


async def main(settings: KernelSettings) -> None:
    await run_service(NAME, setup, settings)
