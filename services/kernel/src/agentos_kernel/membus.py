"""An in-memory bus for handler tests: a service's handlers run against it in milliseconds.

:class:`MemoryBus` has the part of :class:`~agentos_kernel.bus.Bus` that handlers use: ``new``
(the real one), ``publish`` and ``publish_many`` (each event goes through the real codec and back,
so a handler's output is validated as it would be on the wire, and an event id published twice
is stored once, as JetStream's de-duplication does), ``request`` (answered by what ``serve``
registered, or :class:`~agentos_kernel.exceptions.BusUnavailable` as with no responder) and
``serve``. :func:`service_context` wraps it in the :class:`~agentos_kernel.service.ServiceContext`
a service's handler class takes.

It is not a message broker: nothing is delivered to consumers by itself; a test hands events to
the handler under test (``await handler(event)``) and reads what it published (``published``).
The connected suite runs the same services on a real NATS JetStream.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from agentos_schemas import Event, codec
from pydantic import BaseModel

from agentos_kernel.bus import Bus
from agentos_kernel.exceptions import BusUnavailable
from agentos_kernel.replies import PubAck
from agentos_kernel.service import ServiceContext
from agentos_kernel.settings import KernelSettings

M = TypeVar("M", bound=BaseModel)


class MemoryBus:
    """The handler-facing part of :class:`Bus`, kept in memory (see the module docs)."""

    new = Bus.new

    def __init__(self, settings: KernelSettings | None = None, *, source: str = "test") -> None:
        self.settings = settings or KernelSettings(redact_events=False)
        self.source = source
        self.events: list[Event[Any]] = []
        """Every event published, in order, each once (as decoded from its wire form)."""
        self._ids: dict[str, int] = {}
        self._seq = itertools.count(1)
        self._responders: dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[BaseModel]]]] = {}

    async def publish(self, event: Event[Any]) -> PubAck:
        if event.id in self._ids:
            return PubAck(stream="MEMORY", seq=self._ids[event.id], duplicate=True)
        stored = codec.decode(codec.encode(event, codec.data_bytes(event.data)), codec.headers_for(event))
        seq = next(self._seq)
        self._ids[event.id] = seq
        self.events.append(stored)
        return PubAck(stream="MEMORY", seq=seq)

    async def publish_many(self, events: Iterable[Event[Any]]) -> list[PubAck]:
        return [await self.publish(e) for e in events]

    async def close(self) -> None:
        return None

    def serve(
        self, subject: str, request_type: type[M], handler: Callable[[M], Awaitable[BaseModel]], **_: Any
    ) -> None:
        """Answer ``request`` on ``subject`` with ``handler`` (no queue groups: one responder)."""
        self._responders[subject] = (request_type, handler)

    async def request(self, subject: str, payload: BaseModel, reply_type: type[M], *, timeout: float = 3.0) -> M:
        if subject not in self._responders:
            raise BusUnavailable(f"no answer on {subject!r} within {timeout}s: NoRespondersError")
        request_type, handler = self._responders[subject]
        reply = await handler(request_type.model_validate_json(payload.model_dump_json()))
        return reply_type.model_validate_json(reply.model_dump_json())

    def published(self, data_type: type[M]) -> list[Event[M]]:
        """The events published whose payload is a ``data_type``, in order."""
        return [e for e in self.events if isinstance(e.data, data_type)]


def service_context(name: str, bus: MemoryBus | None = None) -> ServiceContext:
    """A :class:`ServiceContext` on a :class:`MemoryBus`, for constructing a service's handlers."""
    memory = bus or MemoryBus(source=name)
    return ServiceContext(
        name=name,
        bus=memory,  # pyright: ignore[reportArgumentType]  (a test double: the part of Bus that handlers use)
        settings=memory.settings,
        instance=f"{name}-memory",
    )
