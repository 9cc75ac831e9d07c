"""The in-memory bus behaves as the handlers' view of the real one: events round-trip through the
codec, an id is stored once, a request with no responder is BusUnavailable, a responder's reply
is validated as the reply type."""

from __future__ import annotations

import pytest
from agentos_kernel.exceptions import BusUnavailable
from agentos_kernel.membus import MemoryBus, service_context
from agentos_schemas.events import AgentRetired, GoalSubmitted
from agentos_schemas.rpc import MEMORY_SEARCH, MemorySearch, MemorySearchResult


async def test_events_round_trip_and_an_id_is_stored_once() -> None:
    bus = MemoryBus(source="svc")
    event = bus.new(AgentRetired(agent="a", instance="i"), tenant="acme")
    first, again = await bus.publish(event), await bus.publish(event)
    assert (first.duplicate, again.duplicate, again.seq) == (False, True, first.seq)
    (stored,) = bus.published(AgentRetired)
    assert stored is not event and stored.data == event.data and stored.tenant == "acme"
    assert stored.source == "svc" and stored.principal == "service:svc"
    assert bus.published(GoalSubmitted) == []


async def test_requests_are_answered_by_what_serves_them() -> None:
    bus = MemoryBus()
    with pytest.raises(BusUnavailable, match="NoRespondersError"):
        await bus.request(MEMORY_SEARCH, MemorySearch(tenant="t", query="q"), MemorySearchResult)

    async def answer(request: MemorySearch) -> MemorySearchResult:
        return MemorySearchResult(error=f"asked {request.query}")

    bus.serve(MEMORY_SEARCH, MemorySearch, answer)
    reply = await bus.request(MEMORY_SEARCH, MemorySearch(tenant="t", query="q"), MemorySearchResult)
    assert reply.error == "asked q"
    assert service_context("svc", bus).bus is bus
