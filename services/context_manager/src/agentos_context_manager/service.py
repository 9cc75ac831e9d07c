"""The context-manager service: turns each ``task.assigned`` into a ``context.ready``.

Every replica learns the charters from every ``agentos.*.agent.announced`` in the log (its own
:class:`~agentos_kernel.follow.Follower`, from the start and then live: announcements are not
split among replicas, so each knows every agent). The replicas share one durable consumer of
``agentos.*.task.assigned``; each asks the memory service over request/reply and publishes
``context.ready`` with an id derived from the task id, so a redelivered assignment is stored once.
An assignment for an agent not yet learnt (its announcement is still on the way) is retried.

Assembly runs on the event loop when the task's variable parts are small and should fit the
budget without trimming (``INLINE_CHARS``: at most a few hundred microseconds of counting, where a
hop to a worker thread costs about as much as a small context's whole assembly) and in a worker
thread otherwise, where counting and trimming can take milliseconds. The system prompt and its
token count are kept per charter (they depend on nothing else) until the registry changes.

The manifest's ``tool_definitions`` records the pinned definition hash of each connector tool
offered to the agent, learnt from ``connector.announced`` and ``connector.approved`` in the log
(:mod:`agentos_context_manager.tooldefs`).

Personal data and secrets are redacted from the messages before they are published (whatever
came in from the goal, the hand-off or memory), and the manifest's ``classification`` records
which kinds were found — redacted here or already redacted upstream — so the audit can tell
which agents touched which kind of data.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentos_kernel.exceptions import BusUnavailable, Retry
from agentos_kernel.follow import Follower
from agentos_kernel.redact import kinds_in, redactor
from agentos_kernel.service import ServiceContext, run_service
from agentos_kernel.settings import KernelSettings
from agentos_schemas import Event, derived_event_id
from agentos_schemas.charter import Charter
from agentos_schemas.events import ContextManifest, ContextReady, TaskAssigned
from agentos_schemas.rpc import MEMORY_SEARCH, MemoryEntry, MemorySearch, MemorySearchResult
from pydantic import ValidationError

from agentos_context_manager import tooldefs
from agentos_context_manager.assemble import Assembly, SystemPrompt, assemble, context_chars, prepare_system
from agentos_context_manager.registry import AgentRegistry
from agentos_context_manager.tokens import counter
from agentos_context_manager.tooldefs import ToolDefinitions

NAME = "context-manager"
DURABLE = "context-manager"
ANNOUNCED = "agentos.*.agent.announced"
ASSIGNED = "agentos.*.task.assigned"
TOKENIZER_MODEL = "gpt-4o"
MEMORY_TIMEOUT_S = 2.0
QUERY_LIMIT = 4000
#: Up to this many characters of goal, instruction, feedback, hand-off and memory, a context that
#: should fit its budget untrimmed (counting a token per character, an overestimate for text, plus
#: the system prompt) is assembled on the event loop: counting costs ~25 µs per 1000 characters, a
#: worker-thread hop about as much as a small context's whole assembly. Larger ones, and any that
#: may need trimming (repeated counts of long texts), are assembled in a worker thread.
INLINE_CHARS = 8000

log = logging.getLogger("agentos.context_manager")
count = counter(TOKENIZER_MODEL)
"""Tokens of a text: ``agentos_kernel.llm.count_tokens(TOKENIZER_MODEL, text)``, resolved once."""


class ContextManager:
    """The service's state (the agent registry) and its event handlers."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.registry = AgentRegistry()
        self.definitions = ToolDefinitions()
        self.awaiting: set[str] = set()
        self._systems: dict[int, tuple[Charter, SystemPrompt]] = {}
        ctx.status.update(agents=0, awaiting_agents=[], contexts=0, duplicates=0)

    def learn(self, event: Event[Any]) -> None:
        """Apply an ``agent.announced`` event to the registry, or a connector's to the definitions."""
        if self.definitions.apply(event):
            return
        if self.registry.apply(event):
            self._systems.clear()
            self.awaiting.discard(f"{event.tenant}/{event.data.charter.name}")
            self._report()

    async def handle(self, event: Event[Any]) -> None:
        """The consumer's handler: assemble the context of an assignment."""
        if isinstance(event.data, TaskAssigned):
            await self.on_assigned(event)

    async def on_assigned(self, event: Event[Any]) -> None:
        """Assemble and publish the context for one task."""
        task: TaskAssigned = event.data
        charter = self.registry.get(event.tenant, task.agent)
        if charter is None:
            self.awaiting.add(f"{event.tenant}/{task.agent}")
            self._report()
            raise Retry(f"agent {task.agent!r} not announced yet in tenant {event.tenant!r}", delay=1.0)
        entries, notes = await self.search_memory(event, charter)
        system = self.system_prompt(charter)
        assembly: Assembly
        chars = context_chars(task, entries)
        if chars <= INLINE_CHARS and system.tokens + chars <= charter.context_tokens:
            assembly = assemble(charter, task, entries, count, notes=notes, system=system)
        else:
            assembly = await asyncio.to_thread(assemble, charter, task, entries, count, notes=notes, system=system)
        messages, manifest = classified(assembly)
        seen = self.definitions.offered(charter.tools)
        if seen:
            manifest = manifest.model_copy(update={"tool_definitions": seen})
        data = ContextReady(
            task_id=task.task_id,
            goal_id=task.goal_id,
            agent=task.agent,
            step_id=task.step_id,
            messages=messages,
            manifest=manifest,
        )
        ack = await self.ctx.bus.publish(
            self.ctx.bus.new(data, cause=event, id=derived_event_id(task.task_id, "context"))
        )
        self.ctx.status["duplicates" if ack.duplicate else "contexts"] += 1

    def system_prompt(self, charter: Charter) -> SystemPrompt:
        """The charter's system prompt and its token count, built once per registered charter."""
        known = self._systems.get(id(charter))
        if known is not None and known[0] is charter:
            return known[1]
        system = prepare_system(charter, count)
        self._systems[id(charter)] = (charter, system)
        return system

    async def search_memory(
        self, event: Event[Any], charter: Charter
    ) -> tuple[tuple[MemoryEntry, ...], tuple[str, ...]]:
        """Top-k memory for the task, or no memory plus a note when the memory service fails."""
        task: TaskAssigned = event.data
        if charter.memory.k == 0 or not charter.memory.kinds:
            return (), ()
        query = f"{task.instruction}\n{task.goal_text}"[:QUERY_LIMIT]
        request = MemorySearch(
            tenant=event.tenant, query=query, kinds=charter.memory.kinds, goal_id=task.goal_id, k=charter.memory.k
        )
        try:
            result = await self.ctx.bus.request(MEMORY_SEARCH, request, MemorySearchResult, timeout=MEMORY_TIMEOUT_S)
        except (BusUnavailable, ValidationError) as exc:
            log.warning("memory search for %s failed: %s", task.task_id, exc)
            return (), ("memory: unavailable",)
        if result.error:
            log.warning("memory search for %s: %s", task.task_id, result.error)
            return (), (f"memory: unavailable ({result.error[:200]})",)
        return result.entries, ()

    def _report(self) -> None:
        self.ctx.status["agents"] = len(self.registry)
        self.ctx.status["awaiting_agents"] = sorted(self.awaiting)


def classified(assembly: Assembly) -> tuple[tuple[dict[str, Any], ...], ContextManifest]:
    """The messages with personal data and secrets redacted, and the manifest tagged with the kinds."""
    messages, found = redactor().messages(assembly.messages)
    kinds = set(found)
    for m in messages:
        kinds |= kinds_in(str(m.get("content") or ""))
    manifest = assembly.manifest.model_copy(update={"classification": tuple(sorted(kinds))})
    return tuple(messages), manifest


async def setup(ctx: ServiceContext) -> None:
    """Learn every announced agent from the log (and keep learning), then consume assignments."""
    service = ContextManager(ctx)
    await asyncio.to_thread(count, "warm up the tokenizer")  # the first call imports litellm
    # One follower, so agents and connector definitions are learnt in log order (a specialist
    # announces the connectors its charters name before the agents).
    subjects = [ANNOUNCED, tooldefs.ANNOUNCED, tooldefs.APPROVED]
    follower = Follower(ctx.bus, subjects, service.learn, name=f"{NAME}-agents")
    await follower.start()
    ctx.closers.append(follower.stop)
    await ctx.consume(DURABLE, [ASSIGNED], service.handle, concurrency=16, types={TaskAssigned.ce_type()})


async def main(settings: KernelSettings) -> None:
    """Run the context-manager until it is told to stop."""
    await run_service(NAME, setup, settings)
