"""The orchestrator service: goals become plans, plans become tasks, results become outcomes.

State lives in memory and is rebuilt from the log on start (``replay`` of ``REPLAY``: the facts
it consumes plus its own decisions), so killing the orchestrator loses nothing: ``decide``
re-derives exactly the commands not yet published, and their deterministic ids make any
re-publish a no-op.

Live, its durable consumer takes only the facts others state (``LIVE``). Its own decisions
(``goal.planned|completed|failed``, ``task.assigned|reviewed`` — subjects only the orchestrator may
publish) are folded into the state when they are decided, before they are published, so their
echo would change nothing; ``task.started`` changes no decision. What follows from a decision is
decided at once (``settle``): a verdict releases the next step, a plan its first steps, a goal that
ends the capacity its tasks held. Each such round of decisions is published after the acks of the
round it follows from, so the log holds a goal's decisions in the order they were taken even when
a publish has to be retried; the events of one round do not depend on each other, and go out
pipelined (``publish_many``).

Kill switches: while ``halt.all``, ``halt.tenant.<t>`` or ``halt.workflow.<goal>`` covers a goal,
the orchestrator takes no decision for it — no task is dispatched, nothing is re-planned,
completed or failed — but it keeps folding every fact into its state (its consumer does not
honour halts). When the switch is lifted the next tick decides again and the goal carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from agentos_kernel import ConfigError, KernelSettings, control
from agentos_kernel.llm import LLM, ModelRegistry
from agentos_kernel.policy import PolicyClient
from agentos_kernel.replay import replay
from agentos_kernel.service import ServiceContext, run_service
from agentos_kernel.tasks import cancel_and_wait
from agentos_schemas import Event, derived_event_id
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
from pydantic_settings import SettingsConfigDict

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
from agentos_orchestrator.state import Goal, World, apply

NAME = "orchestrator"
#: Consumed live: the facts other services state.
LIVE = ["agentos.*.goal.submitted", "agentos.*.goal.escalated", "agentos.*.task.completed",
        "agentos.*.task.failed", "agentos.*.agent.*"]
#: Replayed on start (and after a failed publish): the live facts and the orchestrator's own decisions.
REPLAY = [*LIVE, "agentos.*.goal.planned", "agentos.*.goal.held", "agentos.*.goal.completed", "agentos.*.goal.failed",
          "agentos.*.task.assigned", "agentos.*.task.reviewed"]
#: Rounds of follow-up decisions taken at once after one event (the tick takes any further ones).
MAX_ROUNDS = 8
Round = list[tuple[Goal, list[Command]]]
log = logging.getLogger("agentos.orchestrator")


class OrchestratorSettings(KernelSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTOS_", extra="ignore", use_attribute_docstrings=True)

    planner_model: str = "smart"
    """Model alias the LLM planner uses."""
    planner_fallbacks: tuple[str, ...] = ("fast",)
    workflows_dir: Path | None = None
    """Folder of declared workflow files (default: the ones shipped with the orchestrator)."""
    wait_timeout_s: float = 120.0
    """How long a step may wait for a free specialist before the goal is escalated."""
    tick_s: float = 0.25


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
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:  # litellm takes seconds to import: pay that at start, not on the first goal
            self._llm = await asyncio.to_thread(lambda: LLM(ModelRegistry.load()))
        except ConfigError as exc:
            log.warning("LLM planner unavailable (declared workflows still run): %s", exc)
        last = await replay(self.ctx.bus, REPLAY, lambda e: apply(self.world, e))
        log.info("rebuilt %d goals from the log (up to seq %d)", len(self.world.goals), last)
        await self.declare_workflows()
        await self.ctx.consume(NAME, LIVE, self.on_event, concurrency=8, max_deliver=10,
                               honour_halts=False)
        self._ticker = asyncio.create_task(self._tick())
        self.ctx.closers.append(self.stop)

    async def declare_workflows(self) -> None:
        """State in the log which declared workflows run here and which capabilities they need,
        so submitters can refuse a workflow (or capability) nobody can run before it is submitted."""
        events = []
        for wf in self.workflows.values():
            data = WorkflowDeclared(name=wf.name, description=wf.description, steps=len(wf.steps),
                                    capabilities=tuple(sorted({s.capability for s in wf.steps})))
            event_id = derived_event_id("workflow", data.model_dump_json())  # the same file, the same id
            events.append(self.ctx.bus.new(data, id=event_id, subject=f"workflow/{wf.name}"))
        if events:
            await self.ctx.bus.publish_many(events)

    def report_held(self) -> None:
        """Put the work held for want of a capability into this instance's health record."""
        held = [{"goal_id": g.goal_id, "tenant": g.tenant, "step_id": h.step_id, "capability": h.capability,
                 "reason": h.reason} for g in self.world.goals.values() for h in g.held.values()]
        self.ctx.status["held"] = held[:50]
        self.ctx.status["held_total"] = len(held)

    async def stop(self) -> None:
        await asyncio.gather(cancel_and_wait(self._ticker),
                             *(cancel_and_wait(task) for task in list(self.planning.values())))

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            self._llm = LLM(ModelRegistry.load())
        return self._llm

    async def on_event(self, event: Event[Any]) -> None:
        async with self.lock:
            goal = apply(self.world, event)
            goals = [goal] if goal is not None else []
            # Capacity may have freed: re-decide the goals waiting for a specialist too.
            freed = goal is None or isinstance(event.data, TaskCompleted | TaskFailed)
            rounds = self.settle(goals, freed=freed)
        await self.execute(rounds, cause=event)

    def settle(self, goals: list[Goal], *, freed: bool = False) -> list[Round]:
        """Decide ``goals`` (not halted ones), fold the decisions, and decide again what they lead
        to, until nothing more is emitted. With ``freed``, or once a goal ends, the goals waiting
        for a specialist are decided too (an index, so the cost follows the number of waiting
        goals, not of every goal seen). Returns the rounds, each depending only on earlier ones."""
        rounds: list[Round] = []
        todo = {g.goal_id: g for g in goals}
        for _ in range(MAX_ROUNDS):
            if freed:
                todo.update((gid, self.world.goals[gid]) for gid in list(self.world.waiting)
                            if gid in self.world.goals and gid not in todo)
            decided = [(g, self._decide(g)) for g in todo.values() if not halted(g)]
            batch = [(g, commands) for g, commands in decided if commands]
            if not batch:
                break
            rounds.append(batch)
            # An assignment or an escalation only takes capacity or marks the goal: it releases no
            # step, so only the goals that decided something else (a verdict) are decided again.
            todo = {g.goal_id: g for g, commands in batch if g.active and any(
                isinstance(c, Emit) and not isinstance(c.data, TaskAssigned | GoalEscalated | GoalHeld)
                for c in commands)}
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
        return self.ctx.bus.new(c.data, id=c.id, tenant=goal.tenant, subject=f"goal/{goal.goal_id}",
                                cause=cause or goal.submitted_event,
                                correlationid=goal.submitted_event.correlationid)

    async def execute(self, rounds: list[Round], cause: Event[Any] | None) -> None:
        """Publish the rounds in order, each one pipelined and acknowledged before the next; then
        start what needs planning. A goal's events in a later round are caused by its last event
        of the round before (e.g. the next step's assignment by the verdict that released it)."""
        last: dict[str, Event[Any]] = {}
        for batch in rounds:
            events = []
            caused = dict(last)
            for goal, commands in batch:
                for c in commands:
                    if isinstance(c, Emit):
                        events.append(self._event(goal, c, caused.get(goal.goal_id, cause)))
                        last[goal.goal_id] = events[-1]
            try:
                if events:
                    await self.ctx.bus.publish_many(events)
            except Exception:
                # State already counts these (and later rounds) as published; rebuild it from the
                # log so nothing is lost.
                async with self.lock:
                    self.world = World()
                    await replay(self.ctx.bus, REPLAY, lambda e: apply(self.world, e))
                raise
            for goal, commands in batch:
                for c in commands:
                    if isinstance(c, NeedPlan) and goal.goal_id not in self.planning:
                        self.planning[goal.goal_id] = asyncio.create_task(self._plan(goal, c.reason))

    async def _plan(self, goal: Goal, reason: str | None) -> None:
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
                model = GovernedModel(self.llm, self.policy, goal.tenant, goal.goal_id, revision,
                                      cause=goal.submitted_event, approval_wait_s=max(left, 1.0))
                steps, calls = await llm_plan(model, chain, goal.text, caps, goal.history,
                                              required=goal.capability)
                usage, planner = Usage(calls=tuple(calls)), f"llm:{chain[0]}"
            data = GoalPlanned(goal_id=goal.goal_id, revision=revision, steps=tuple(steps), planner=planner,
                               reason=reason, usage=usage)
            command: Command = Emit(data, derived_event_id(goal.goal_id, "planned", str(revision)))
        except PlanDenied as exc:  # the policy said no (or could not be asked) before a model call
            log.warning("planning %s denied: %s", goal.goal_id, exc)
            command = fail(goal, time.time(), exc.code, str(exc))[0]
        except Exception as exc:  # a planner that cannot answer ends the goal with the reason
            log.warning("planning %s failed: %s", goal.goal_id, exc)
            command = fail(goal, time.time(), "planner_failed", f"{type(exc).__name__}: {exc}")[0]
        finally:
            self.planning.pop(goal.goal_id, None)
        async with self.lock:
            if isinstance(command, Emit):
                self._fold(goal, command)
            # The plan (or the failure) is published first; the assignments it leads to after its ack.
            rounds = [[(goal, [command])], *self.settle([goal], freed=not goal.active)]
        await self.execute(rounds, cause=None)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            with contextlib.suppress(Exception):
                async with self.lock:
                    rounds = self.settle([g for g in self.world.goals.values() if g.active])
                    self.report_held()
                await self.execute(rounds, cause=None)


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
