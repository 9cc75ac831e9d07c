"""The projector's direct pull: messages that arrive close together come as one batch, a batch never
exceeds its size, the rest follows at once, a stop wakes a waiting take, and a deleted consumer is an
error rather than silence; a pull request that cannot be renewed is counted, not silent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import nats.errors
import nats.js.errors
import pytest
from agentos_audit.livepull import LivePull
from agentos_audit.logread import stored_from_msg
from agentos_kernel import Bus
from agentos_kernel.faults import FAULTS
from agentos_kernel.testing import unique
from agentos_schemas import EVENTS_STREAM
from agentos_schemas.events import TaskStarted
from nats.js import api


@contextlib.asynccontextmanager
async def pulling(bus: Bus, tenant: str, batch: int) -> AsyncIterator[tuple[str, LivePull]]:
    """A fresh durable on the tenant's events and a LivePull on it; both gone afterwards."""
    name = unique("lp")
    await bus.js.add_consumer(
        EVENTS_STREAM,
        api.ConsumerConfig(
            durable_name=name,
            ack_policy=api.AckPolicy.ALL,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subjects=[f"agentos.{tenant}.>"],
            ack_wait=30.0,
        ),
    )
    pull = await LivePull(bus.nc, f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{name}", batch=batch).start()
    try:
        yield name, pull
    finally:
        await pull.stop()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await bus.js.delete_consumer(EVENTS_STREAM, name)


async def publish(bus: Bus, tenant: str, n: int) -> None:
    for i in range(n):
        started = TaskStarted(task_id=f"t{i}", goal_id="g", agent="a", instance="i")
        await bus.publish(bus.new(started, tenant=tenant))


async def test_messages_close_together_come_as_one_batch(bus: Bus, tenant: str) -> None:
    async with pulling(bus, tenant, 64) as (_name, pull):
        assert await pull.take(64, 0.05, 0.2) == []  # nothing yet: empty after the timeout
        publisher = asyncio.create_task(publish(bus, tenant, 10))
        started = time.monotonic()
        got = await pull.take(64, 1.0, 5.0)  # waits up to 1 s after the first for the rest
        await publisher
        assert len(got) == 10, "published within the wait: one batch"
        seqs = [stored_from_msg(m).seq for m in got]
        assert seqs == sorted(seqs)
        await got[-1].ack()
        await publish(bus, tenant, 9)
        await asyncio.sleep(0.3)  # all nine are buffered
        first = await pull.take(4, 5.0, 1.0)
        second = await pull.take(4, 5.0, 1.0)  # the rest waited already: at once, despite wait_s
        third = await pull.take(4, 5.0, 1.0)
        assert [len(first), len(second)] == [4, 4] and len(third) == 1
        assert time.monotonic() - started < 4.0


async def test_a_full_batch_does_not_wait(bus: Bus, tenant: str) -> None:
    await publish(bus, tenant, 20)
    async with pulling(bus, tenant, 8) as (_name, pull):
        started = time.monotonic()
        full = [await pull.take(8, 3.0, 5.0) for _ in range(2)]
        assert [len(b) for b in full] == [8, 8]
        assert time.monotonic() - started < 2.0, "a full batch is handed over without waiting"
        assert len(pull.buffer) <= 8, "no more is pulled than one batch ahead"
        last = await pull.take(8, 1.0, 5.0)
        assert len(last) == 4 and time.monotonic() - started >= 0.9, "a partial batch waits for more"


async def test_stop_wakes_a_waiting_take(bus: Bus, tenant: str) -> None:
    async with pulling(bus, tenant, 8) as (_name, pull):
        waiting = asyncio.create_task(pull.take(8, 0.0, 30.0))
        await asyncio.sleep(0.1)
        pull.wake()
        assert await asyncio.wait_for(waiting, 2.0) == []


async def test_a_deleted_consumer_is_an_error(bus: Bus, tenant: str) -> None:
    async with pulling(bus, tenant, 8) as (name, pull):
        await asyncio.sleep(0.1)
        await bus.js.delete_consumer(EVENTS_STREAM, name)
        with pytest.raises(nats.js.errors.APIError):
            await pull.take(8, 0.0, 5.0)


class _RefusingConnection:
    """A connection whose every publish fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "") -> None:
        raise self.error


def _pull_with_one_buffered(error: Exception) -> tuple[LivePull, object]:
    """A LivePull whose pull request is used up, one message buffered, on a refusing connection."""
    pull = LivePull(_RefusingConnection(error), "next", batch=4)
    pull._sub = SimpleNamespace(subject="_INBOX.test")
    msg = object()
    pull.buffer.append(cast(Any, msg))
    pull.first_at, pull.outstanding = pull._loop.time() - 1.0, 0
    return pull, msg


async def test_a_renewal_lost_with_the_connection_is_counted_not_silent() -> None:
    place = "renew the audit durable's pull request"
    before = FAULTS.counts[place]
    pull, msg = _pull_with_one_buffered(nats.errors.ConnectionClosedError())
    assert await pull.take(4, 0.0, 0.1) == [msg], "what arrived is handed over; the stall check renews later"
    assert FAULTS.counts[place] == before + 1
    assert FAULTS.last is not None and FAULTS.last[1] == place


async def test_a_renewal_that_fails_otherwise_is_raised() -> None:
    pull, _msg = _pull_with_one_buffered(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        await pull.take(4, 0.0, 0.1)
