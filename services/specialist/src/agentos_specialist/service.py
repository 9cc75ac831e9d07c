"""The specialist service: hosts every charter in its folder, announces them, and works tasks.

A task's conversation is snapshotted to the ``AGENTOS_CONTEXTS`` key-value bucket after every
model turn, so a replica that dies mid-task is replaced by one that continues from the snapshot.
A finished task's result is kept there too: a redelivered task republishes the same result
(same event id, so JetStream keeps one) instead of doing the work again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import nats.js.errors
from agentos_kernel import KernelSettings, Reject
from agentos_kernel.exceptions import Unavailable
from agentos_kernel.faults import contained
from agentos_kernel.llm import LLM, ModelRegistry
from agentos_kernel.replies import PubAck
from agentos_kernel.service import ServiceContext, run_service
from agentos_kernel.tasks import wait_done
from agentos_schemas import Event, derived_event_id
from agentos_schemas.charter import Charter, load_charters
from agentos_schemas.events import (
    AgentAnnounced,
    AgentRetired,
    ContextReady,
    Effect,
    EventData,
    ModelCall,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    Usage,
)
from nats.js import api
from pydantic_settings import SettingsConfigDict

from agentos_specialist.connectors.ring import ConnectorRing
from agentos_specialist.connectors.server import ConnectorFailed
from agentos_specialist.connectors.spec import load_connectors, shipped_dir
from agentos_specialist.effects import WRITES
from agentos_specialist.runner import Outcome, Progress, run_agent
from agentos_specialist.tools import DocumentIndex, Tool, ToolContext, build_tools

NAME = "specialist"
CONTEXTS_BUCKET = "AGENTOS_CONTEXTS"
log = logging.getLogger("agentos.specialist")


class SpecialistSettings(KernelSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTOS_", extra="ignore", use_attribute_docstrings=True)

    charters_dir: Path | None = None
    """Folder of charter files (default: the charters shipped with the specialist)."""
    documents_dir: Path | None = None
    """Folder the search_documents tool indexes (default: the shipped research library)."""
    task_ack_wait_s: float = 30.0
    """Seconds after which a task whose replica died is handed to another (kept alive while working)."""
    connectors_dir: Path | None = None
    """Folder of connector files (``*.yaml``, MCP servers as tools) added to the shipped ones; a
    file here overrides a shipped connector of the same name."""


class Specialist:
    def __init__(
        self,
        ctx: ServiceContext,
        charters: dict[str, Charter],
        tools: dict[str, Tool],
        llm: LLM,
        ack_wait: float = 30.0,
        ring: ConnectorRing | None = None,
    ) -> None:
        self.ring = ring
        self.ctx = ctx
        self.ack_wait = ack_wait
        self.charters = charters
        self.tools = tools
        self.llm = llm
        self.kv: Any = None

    async def start(self) -> None:
        try:
            self.kv = await self.ctx.bus.js.key_value(CONTEXTS_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self.kv = await self.ctx.bus.js.create_key_value(
                api.KeyValueConfig(
                    bucket=CONTEXTS_BUCKET, history=1, ttl=7 * 24 * 3600, replicas=self.ctx.settings.replicas
                )
            )
        if self.ring is not None:
            # Before the agents: the context-manager learns the definitions of the connector tools
            # they use first, and records their hashes in each task's manifest.
            await self.ring.prepare(tuple(n for c in self.charters.values() for n in c.tools))
        for charter in self.charters.values():
            await self.ctx.bus.publish(
                self.ctx.bus.new(
                    AgentAnnounced(
                        agent=charter.name,
                        version=charter.version,
                        capabilities=charter.capabilities,
                        instance=self.ctx.instance,
                        capacity=charter.capacity,
                        charter=charter,
                    )
                )
            )
        capacity = min(sum(c.capacity for c in self.charters.values()), 64)
        await self.ctx.consume(
            NAME, ["agentos.*.context.ready"], self.handle, concurrency=capacity, ack_wait=self.ack_wait, max_deliver=4
        )
        self.ctx.closers.append(self.retire)
        if self.ring is not None:
            self.ctx.closers.append(self.ring.close)

    async def retire(self) -> None:
        for charter in self.charters.values():
            await self.ctx.bus.publish(self.ctx.bus.new(AgentRetired(agent=charter.name, instance=self.ctx.instance)))

    async def handle(self, event: Event[Any]) -> None:
        data: ContextReady = event.data
        charter = self.charters.get(data.agent)
        if charter is None:
            raise Reject(f"agent {data.agent!r} is not hosted here (hosted: {sorted(self.charters)})")
        key = data.task_id
        saved = await self._load(key)
        if saved.get("done"):
            await self._publish_result(event, saved["kind"], saved["result"])
            return
        # The start is stored while the first policy decision is asked (the two are independent);
        # the model is called, and the result published, only once it is (ToolContext.started).
        started = asyncio.ensure_future(self.ctx.bus.publish(self._start_event(event)))
        progress = _progress_from(saved) or Progress(messages=[dict(m) for m in data.messages])
        try:
            outcome = await self._attempt(charter, progress, ToolContext(self.ctx.bus, event, started=started), key)
        finally:
            await wait_done(started)
        await _fail_unless_started(started, outcome)
        kind, result = _result(data, outcome, progress, charter.claims)
        # Both before the ack, so their order does not matter: a redelivery after a crash finds
        # the saved result (and republishes it under the same id) or runs the task again.
        _, ack = await asyncio.gather(
            self._save(key, {"done": True, "kind": kind, "result": result}), self._publish_result(event, kind, result)
        )
        if ack.duplicate and outcome.settle_separately is not None:
            # An earlier attempt's result is stored under this id: this run's answer is settled apart
            # (settling a reservation twice changes nothing).
            await outcome.settle_separately()

    async def _attempt(self, charter: Charter, progress: Progress, tool_ctx: ToolContext, key: str) -> Outcome:
        """Resolve the charter's tools (starting the connectors it names) and run the agent loop; a
        connector that cannot be reached fails the task with the reason, it does not hang it."""
        try:
            tools = await self.ring.resolve(charter.tools) if self.ring is not None else self.tools
        except (ConnectorFailed, Unavailable) as exc:
            return Outcome(False, reason=f"tools unavailable: {exc}", retryable=True, code="error")
        return await run_agent(
            self.llm, charter, progress, tools, tool_ctx, lambda p: self._save(key, _progress_dump(p))
        )

    def _start_event(self, event: Event[Any]) -> Event[Any]:
        """``task.started`` for the task of ``event`` (the same id for every delivery of it)."""
        data: ContextReady = event.data
        started = TaskStarted(task_id=data.task_id, goal_id=data.goal_id, agent=data.agent, instance=self.ctx.instance)
        return self.ctx.bus.new(started, cause=event, id=derived_event_id(data.task_id, "started"))

    async def _publish_result(self, cause: Event[Any], kind: str, result: dict[str, Any]) -> PubAck:
        cls: type[EventData] = TaskCompleted if kind == "completed" else TaskFailed
        data = cls.model_validate(result)
        return await self.ctx.bus.publish(
            self.ctx.bus.new(data, cause=cause, id=derived_event_id(result["task_id"], kind))
        )

    async def _load(self, key: str) -> dict[str, Any]:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return {}
        return dict(json.loads(entry.value or b"{}"))

    async def _save(self, key: str, value: dict[str, Any]) -> None:
        await self.kv.put(key, json.dumps(value).encode())


async def _fail_unless_started(started: asyncio.Future[PubAck], outcome: Outcome) -> None:
    """Raise what kept the task's start from being stored, if anything did."""
    if started.cancelled() or started.exception() is not None:
        # The attempt fails and is redelivered (a start that could not be stored), so the
        # answer's call is reported without task.completed: at best, as what must come out is the
        # start's own error (below); a reservation left unsettled is charged once it expires.
        if outcome.settle_separately is not None:
            with contained("settle the answer's model call apart (best effort: any failure)"):
                await outcome.settle_separately()
        started.result()


def _progress_dump(p: Progress) -> dict[str, Any]:
    return {
        "messages": p.messages,
        "calls": [c.model_dump() for c in p.calls],
        "tool_rounds": p.tool_rounds,
        "tool_calls": p.tool_calls,
        "output_retries": p.output_retries,
        "effects": [e.model_dump() for e in p.effects],
        "tainted_by": p.tainted_by,
    }


def _progress_from(saved: dict[str, Any]) -> Progress | None:
    if "messages" not in saved:
        return None
    return Progress(
        messages=saved["messages"],
        calls=[ModelCall.model_validate(c) for c in saved["calls"]],
        tool_rounds=saved["tool_rounds"],
        tool_calls=saved["tool_calls"],
        output_retries=saved["output_retries"],
        effects=[Effect.model_validate(e) for e in saved.get("effects", ())],
        tainted_by=list(saved.get("tainted_by", ())),
    )


def _result(
    data: ContextReady, outcome: Outcome, progress: Progress, claims: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    usage = Usage(calls=tuple(progress.calls), tool_calls=progress.tool_calls)
    common = {
        "task_id": data.task_id,
        "goal_id": data.goal_id,
        "step_id": data.step_id,
        "agent": data.agent,
        "usage": usage.model_dump(mode="json"),
    }
    if outcome.ok:
        settlement = {"settlement": outcome.settlement.model_dump()} if outcome.settlement else {}
        return "completed", {
            **common,
            "output": outcome.output,
            **settlement,
            "claims": claims,
            "effects": [e.model_dump() for e in progress.effects],
        }
    return "failed", {**common, "reason": outcome.reason, "retryable": outcome.retryable, "code": outcome.code}


def unattested_writes(charter: Charter, tools: dict[str, Tool]) -> list[str]:
    """The write tools ``charter`` lists without a claim field naming them."""
    return [n for n in charter.tools if n in tools and tools[n].action in WRITES and n not in charter.claims.values()]


def default_charters_dir() -> Path:
    return Path(str(resources.files("agentos_specialist") / "charters"))


async def setup(ctx: ServiceContext) -> None:
    settings = SpecialistSettings()
    charters = load_charters(settings.charters_dir or default_charters_dir())
    tools = build_tools(DocumentIndex.from_folder(settings.documents_dir))
    for charter in charters.values():
        for name in unattested_writes(charter, tools):
            log.warning(
                "agent %s may call %s, which writes, but its charter claims nothing about it: "
                "what its output says about %s is not attested (add claims: {<field>: %s})",
                charter.name,
                name,
                name,
                name,
            )
    connectors = load_connectors(shipped_dir(), settings.connectors_dir)
    ring = ConnectorRing(ctx.bus, connectors, tools, ctx.instance)
    specialist = Specialist(ctx, charters, tools, LLM(ModelRegistry.load()), settings.task_ack_wait_s, ring)
    await specialist.start()


async def main(settings: KernelSettings) -> None:
    await run_service(NAME, setup, settings)
