"""The CloudEvent id is an event's identity for every durable consumer, on real NATS JetStream:
a later copy of an event (no ``Nats-Msg-Id``, or stored after the stream's duplicate window) is
not handled again, and an id reused for other content is dead-lettered with the reason."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from agentos_kernel import Bus, Retry
from agentos_kernel.replay import replay
from agentos_kernel.testing import eventually, unique
from agentos_schemas import DLQ_STREAM, Event, codec, dlq_subject, event_subject
from agentos_schemas.events import GoalSubmitted


async def until(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check)


async def publish_without_msg_id(bus: Bus, event: Event[Any]) -> None:
    """Store ``event`` as a raw publisher (or JetStream after its duplicate window) would: a new
    stream message whatever the id."""
    headers = {k: v for k, v in codec.headers_for(event).items() if k != "Nats-Msg-Id"}
    await bus.publish_raw(event_subject(event.tenant, event.type), codec.encode(event), headers)


async def dead_letters(bus: Bus, durable: str) -> list[Any]:
    found: list[Any] = []
    sub = await bus.js.subscribe(dlq_subject(durable), stream=DLQ_STREAM, ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                return found
            found.append(msg)
    finally:
        await sub.unsubscribe()


async def test_a_copy_is_skipped_and_a_reused_id_is_dead_lettered(bus: Bus, tenant: str) -> None:
    handled: Counter[str] = Counter()

    async def handler(event: Event[Any]) -> None:
        handled[event.data.goal_id] += 1

    durable = unique("ident")
    consumer = await bus.consumer(durable, [f"agentos.{tenant}.>"], handler, concurrency=1).start()
    first = bus.new(GoalSubmitted(goal_id="g1", text="Compare vendors"), tenant=tenant)
    await bus.publish(first)
    await until(lambda: handled["g1"] == 1)
    await publish_without_msg_id(bus, first)  # the same fact again, stored as a new message
    other = bus.new(GoalSubmitted(goal_id="g2", text="Refund everybody"), tenant=tenant, id=first.id)
    await publish_without_msg_id(bus, other)  # the same id, another fact
    after = bus.new(GoalSubmitted(goal_id="g3", text="x"), tenant=tenant)
    await bus.publish(after)
    await until(lambda: handled["g3"] == 1 and consumer.dead_lettered == 1)
    assert handled == Counter({"g1": 1, "g3": 1}) and consumer.copies == 1
    (letter,) = await dead_letters(bus, durable)
    assert letter.headers["AgentOS-DLQ-Code"] == "event_id_reused"
    assert first.id in letter.headers["AgentOS-DLQ-Reason"] and "other content" in letter.headers["AgentOS-DLQ-Reason"]
    # a restarted consumer (same durable) keeps its claims; a rebuild from the log keeps the first
    await consumer.stop()
    await publish_without_msg_id(bus, first)
    consumer = await bus.consumer(durable, [f"agentos.{tenant}.>"], handler, concurrency=1).start()
    await until(lambda: consumer.copies == 1)
    rebuilt: list[str] = []
    await replay(bus, [f"agentos.{tenant}.>"], lambda e: rebuilt.append(e.data.goal_id))
    assert rebuilt == ["g1", "g3"] and handled == Counter({"g1": 1, "g3": 1})
    await consumer.stop()


async def test_a_redelivery_runs_again_and_a_dead_lettered_event_can_be_replayed(bus: Bus, tenant: str) -> None:
    attempts: Counter[str] = Counter()
    broken = {"yes"}

    async def handler(event: Event[Any]) -> None:
        attempts[event.data.goal_id] += 1
        if broken:
            raise Retry("backend down")

    durable = unique("ident")
    consumer = await bus.consumer(durable, [f"agentos.{tenant}.>"], handler, max_deliver=2, backoff=(0.05,)).start()
    event = bus.new(GoalSubmitted(goal_id="g1", text="x"), tenant=tenant)
    await bus.publish(event)
    await until(lambda: consumer.dead_lettered == 1)
    assert attempts["g1"] == 2  # the same message redelivered is handled again
    broken.clear()
    await publish_without_msg_id(bus, event)  # the dead letter replayed: its claim was released
    await until(lambda: attempts["g1"] == 3)
    await asyncio.sleep(0.3)
    assert attempts["g1"] == 3 and consumer.copies == 0
    await consumer.stop()
