"""Reading the log back: how services rebuild their state after a restart, and how analysts replay."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats.errors
from agentos_schemas import EVENTS_STREAM, Event, codec
from nats.js import api

from agentos_kernel.bus import Bus
from agentos_kernel.exceptions import BusUnavailable

log = logging.getLogger("agentos.replay")


async def replay(
    bus: Bus,
    subjects: Sequence[str],
    apply: Callable[[Event[Any]], Awaitable[Any] | Any],
    *,
    batch: int = 512,
    timeout: float = 300.0,
    since: dt.datetime | None = None,
) -> int:
    """Feed every stored event on ``subjects`` (oldest first, from ``since`` or the log's start, up
    to the log's end now) to ``apply``.

    It reads until the consumer has nothing pending — never stopping early because a fetch was
    slow, since a service that rebuilt from part of the log would act on a wrong state. Skipped:
    undecodable events (consumers dead-letter them) and later messages with an id already read
    (the first is the fact, as for consumers). Returns the last stream sequence read."""
    psub = await bus.js.pull_subscribe(subject="", stream=EVENTS_STREAM, config=_reader_config(subjects, since))
    deadline = asyncio.get_running_loop().time() + timeout
    last = 0
    seen: set[str] = set()
    try:
        if (await psub.consumer_info()).num_pending == 0:
            return last
        while True:
            try:
                msgs = await psub.fetch(batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                if await _read_to_end(psub, subjects, deadline, timeout):
                    return last
                continue
            for msg in msgs:
                last = msg.metadata.sequence.stream
                await _apply_one(bus, msg, apply, seen)
            if msgs and msgs[-1].metadata.num_pending == 0:
                return last
    finally:
        await psub.unsubscribe()


def _reader_config(subjects: Sequence[str], since: dt.datetime | None) -> api.ConsumerConfig:
    """A throwaway reader of ``subjects`` from ``since`` (or the log's start): unacknowledged, in
    memory, and removed by the server a minute after it was last used."""
    return api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        filter_subjects=list(subjects),
        inactive_threshold=60.0,
        mem_storage=True,
        deliver_policy=api.DeliverPolicy.ALL if since is None else api.DeliverPolicy.BY_START_TIME,
        opt_start_time=since,  # nats-py sends it as RFC 3339 in UTC (a naive one taken as UTC)
    )


async def _read_to_end(psub: Any, subjects: Sequence[str], deadline: float, timeout: float) -> bool:
    """After a fetch that brought nothing: True when nothing is left pending. A slow fetch is no
    reason to stop (see :func:`replay`): False, fetch again, until ``deadline``; then BusUnavailable."""
    if (await psub.consumer_info()).num_pending == 0:
        return True
    if asyncio.get_running_loop().time() > deadline:
        raise BusUnavailable(f"replay of {list(subjects)} did not finish in {timeout:.0f}s") from None
    return False


async def _apply_one(bus: Bus, msg: Any, apply: Callable[[Event[Any]], Awaitable[Any] | Any], seen: set[str]) -> None:
    try:
        event = await bus.decode(msg.data, msg.headers)
    except codec.DecodeError:
        return
    if event.id in seen:
        return
    seen.add(event.id)
    result = apply(event)
    if inspect.isawaitable(result):
        await result
