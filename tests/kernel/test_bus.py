"""The bus against a real JetStream: stream guards, dedup, claim checks, tracing, shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.js.errors
import pytest
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.testing import eventually, unique
from agentos_kernel.tracing import trace_id
from agentos_schemas import EVENTS_STREAM, Event, event_subject
from agentos_schemas.events import GoalSubmitted, TaskStarted


def goal(text: str = "Research competitors", **inputs: Any) -> GoalSubmitted:
    return GoalSubmitted(goal_id=unique("g"), text=text, inputs=inputs)


async def count(bus: Bus, subject: str) -> int:
    info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_provision_is_idempotent_and_the_log_is_immutable(bus: Bus, tenant: str) -> None:
    await bus.provision()
    info = await bus.js.stream_info(EVENTS_STREAM)
    assert info.config.deny_delete and info.config.deny_purge
    ack = await bus.publish(bus.new(goal(), tenant=tenant))
    with pytest.raises(nats.js.errors.Error):
        await bus.js.delete_msg(EVENTS_STREAM, ack.seq)
    with pytest.raises(nats.js.errors.Error):
        await bus.js.purge_stream(EVENTS_STREAM)


async def test_a_republished_event_is_stored_once(bus: Bus, tenant: str) -> None:
    event = bus.new(goal(), tenant=tenant)
    first = await bus.publish(event)
    again = await bus.publish(event)
    assert again.duplicate and again.seq == first.seq
    assert await count(bus, event_subject(tenant, event.type)) == 1


async def test_large_payloads_travel_by_claim_check(bus: Bus, tenant: str) -> None:
    big = "x" * (bus.settings.claim_check_bytes + 10_000)
    event = bus.new(goal(transcript=big), tenant=tenant)
    ack = await bus.publish(event)
    stored = await bus.js.get_msg(EVENTS_STREAM, ack.seq)
    assert len(stored.data or b"") < 2_000, "the log holds the reference, not the payload"
    assert b'"dataref":"nats-object://AGENTOS_PAYLOADS/' in (stored.data or b"")
    got: list[Event[Any]] = []

    async def handler(e: Event[Any]) -> None:
        got.append(e)

    consumer = await bus.consumer(unique("cc"), [event_subject(tenant, event.type)], handler).start()
    try:
        await eventually(lambda: _truthy(got))
    finally:
        await consumer.stop()
    assert got[0].data.inputs["transcript"] == big
    assert got[0].datahash == event.datahash and event.datahash is not None


async def _truthy(items: list[Any]) -> bool:
    return bool(items)


async def test_trace_context_continues_through_a_handler(bus: Bus, tenant: str) -> None:
    first = bus.new(goal(), tenant=tenant)
    follow_ups: list[Event[Any]] = []

    async def handler(e: Event[Any]) -> None:
        reply = bus.new(TaskStarted(task_id="t", goal_id=e.data.goal_id, agent="a", instance="i"), cause=e)
        follow_ups.append(reply)

    consumer = await bus.consumer(unique("tr"), [event_subject(tenant, first.type)], handler).start()
    await bus.publish(first)
    try:
        await eventually(lambda: _truthy(follow_ups))
    finally:
        await consumer.stop()
    reply = follow_ups[0]
    assert trace_id(reply.traceparent) == trace_id(first.traceparent)
    assert reply.traceparent != first.traceparent, "the handler's span is a child, not the same span"
    assert reply.causationid == first.id and reply.correlationid == first.correlationid
    assert reply.tenant == tenant


async def test_shutdown_lets_in_flight_handlers_finish(settings: KernelSettings, bus: Bus, tenant: str) -> None:
    own = await Bus.connect(settings, source="test-shutdown")
    started, finished = asyncio.Event(), asyncio.Event()
    durable = unique("sd")

    async def slow(e: Event[Any]) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.set()

    consumer = await own.consumer(durable, [f"agentos.{tenant}.>"], slow).start()
    await own.publish(own.new(goal(), tenant=tenant))
    await asyncio.wait_for(started.wait(), 10)
    await consumer.stop(timeout=5)
    assert finished.is_set()
    info = await own.js.consumer_info(EVENTS_STREAM, durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0, "acked, so nothing is redelivered"
    await own.close()
