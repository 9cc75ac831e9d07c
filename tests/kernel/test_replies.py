"""Pipelined request-reply (agentos_kernel.replies) against a real JetStream: acks, refusals,
KV direct gets, deadlines without a timer per request, and the Bus's retry on top."""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest
from agentos_kernel import Bus
from agentos_kernel.replies import PubAck, Replies, pub_ack
from agentos_kernel.testing import unique
from agentos_schemas import codec, event_subject
from agentos_schemas.events import GoalSubmitted
from nats.js import api


async def test_pipelined_publishes_are_acked_in_order_and_deduplicated(bus: Bus, tenant: str) -> None:
    events = [bus.new(GoalSubmitted(goal_id=unique("g"), text=f"goal {i}"), tenant=tenant) for i in range(200)]
    items = [(event_subject(e.tenant, e.type), codec.encode(e), codec.headers_for(e)) for e in events]
    futures = [await bus.replies.publish(*item) for item in items]
    acks = [pub_ack(await f) for f in futures]
    assert all(isinstance(a, PubAck) and a.stream == "AGENTOS_EVENTS" and not a.duplicate for a in acks)
    seqs = [a.seq for a in acks]
    assert seqs == sorted(seqs) and len(set(seqs)) == 200
    again = pub_ack(await (await bus.replies.publish(*items[7])))  # same Nats-Msg-Id
    assert again.duplicate and again.seq == acks[7].seq
    assert bus.replies.pending == 0


async def test_a_refusal_is_raised_as_nats_py_raises_it(bus: Bus) -> None:
    with pytest.raises(nats.js.errors.NoStreamResponseError):  # no stream listens on this subject
        pub_ack(await (await bus.replies.publish(f"nostream.{unique('x')}", b"{}")))
    with pytest.raises(nats.js.errors.APIError, match="expected stream"):
        pub_ack(
            await (
                await bus.replies.publish(
                    f"agentos.{unique('t')}.goal.submitted", b"{}", {"Nats-Expected-Stream": "NOT_THIS_ONE"}
                )
            )
        )


async def test_kv_direct_get_reads_the_last_value_and_skips_deletes(bus: Bus) -> None:
    name = unique("REPLIES").upper()
    kv = await bus.js.create_key_value(api.KeyValueConfig(bucket=name, history=1, direct=True))
    try:
        await kv.put("a", b"one")
        await kv.put("a", b"two")
        await kv.put("b", b"gone")
        await kv.delete("b")
        got = await bus.replies.kv_get(bus.js._prefix, f"KV_{name}", f"$KV.{name}.a")
        assert got is not None and got.data == b"two"
        assert await bus.replies.kv_get(bus.js._prefix, f"KV_{name}", f"$KV.{name}.b") is None
        assert await bus.replies.kv_get(bus.js._prefix, f"KV_{name}", f"$KV.{name}.never") is None
    finally:
        await bus.js.delete_key_value(name)


async def test_an_unanswered_request_fails_at_its_deadline(bus: Bus) -> None:
    replies = Replies(bus.nc, timeout_s=0.3)
    subject = f"silent.{unique('s')}"
    sub = await bus.nc.subscribe(subject)  # someone receives it, nobody answers
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        future = await replies.request(subject, b"hello")
        with pytest.raises(TimeoutError):
            await future
        assert 0.25 <= loop.time() - started < 1.5
        assert replies.pending == 0
    finally:
        await sub.unsubscribe()
        await replies.close()


async def test_close_fails_what_is_pending(bus: Bus) -> None:
    replies = Replies(bus.nc, timeout_s=30)
    subject = f"silent.{unique('s')}"
    sub = await bus.nc.subscribe(subject)
    try:
        future = await replies.request(subject)
        await replies.close()
        with pytest.raises(TimeoutError):
            await future
    finally:
        await sub.unsubscribe()
