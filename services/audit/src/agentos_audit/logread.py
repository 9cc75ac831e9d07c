"""Reading stored messages of ``AGENTOS_EVENTS`` by stream sequence, exactly as JetStream keeps them."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from agentos_schemas import EVENTS_STREAM

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Stored(NamedTuple):
    """One stored message: sequence, body, headers, the time JetStream stored it, its subject."""

    seq: int
    body: bytes
    headers: dict[str, str] | None
    time: dt.datetime
    subject: str


def from_ns(ns: int) -> dt.datetime:
    """A stream timestamp in nanoseconds, truncated to microseconds (as every reader here does)."""
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def stored_from_msg(msg: Msg) -> Stored:
    """A delivered JetStream message as :class:`Stored` (time parsed exactly from the ack subject)."""
    tokens = (msg.reply or "").split(".")  # parsed here once; nats-py's msg.metadata parses it again
    if len(tokens) == 9:
        seq, stamp = int(tokens[5]), int(tokens[7])
    else:
        seq, stamp = int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.Timestamp])
    return Stored(seq, msg.data, msg.headers, from_ns(stamp), msg.subject)


async def get_stored(js: JetStreamContext, seq: int) -> Stored | None:
    """The message at ``seq`` fetched directly from the stream, or None if the stream lacks it."""
    try:
        raw = await js.get_msg(EVENTS_STREAM, seq)
    except nats.js.errors.NotFoundError:
        return None
    headers = {k: v for k, v in (raw.headers or {}).items()} or None
    stamp = raw.time or _EPOCH
    return Stored(seq, raw.data or b"", headers, stamp.astimezone(dt.UTC), raw.subject or "")


async def stream_bounds(js: JetStreamContext) -> tuple[int, int, str]:
    """(first sequence, last sequence, creation time) of the events stream."""
    info = await js.stream_info(EVENTS_STREAM)
    created = info.created.isoformat() if info.created else ""
    return info.state.first_seq, info.state.last_seq, created


async def read_log(js: JetStreamContext, start: int, end: int, *, batch: int = 1024) -> AsyncIterator[list[Stored]]:
    """Batches of stored messages with ``start <= seq <= end``, in sequence order (sequences the
    stream no longer holds are skipped). No acks: an ephemeral, in-memory consumer."""
    if end < start:
        return
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(start, 1), inactive_threshold=30.0, mem_storage=True,
    )
    psub: Any = await js.pull_subscribe(subject="", stream=EVENTS_STREAM, config=config)
    try:
        while True:
            try:
                msgs = await psub.fetch(batch, timeout=2.0)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                return
            out = [stored_from_msg(m) for m in msgs]
            out = [s for s in out if s.seq <= end]
            if out:
                yield out
            if not out or out[-1].seq >= end or len(out) < len(msgs):
                return
    finally:
        await psub.unsubscribe()


__all__ = ["Stored", "from_ns", "get_stored", "read_log", "stored_from_msg", "stream_bounds"]
