"""Reading stored messages of ``AGENTOS_EVENTS`` by stream sequence, exactly as JetStream keeps them."""

from __future__ import annotations

import asyncio
import contextlib
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


async def read_log(js: JetStreamContext, start: int, end: int, *, batch: int = 1024,
                   depth: int = 2, stall_s: float = 30.0) -> AsyncIterator[list[Stored]]:
    """Batches of stored messages with ``start <= seq <= end``, in sequence order (sequences the
    stream no longer holds are skipped). No acks: an ephemeral, in-memory consumer.

    The consumer is pulled directly: ``depth`` pull requests of ``batch`` messages are kept ahead
    of the caller, and the messages land on a core subscription whose callback turns each into a
    :class:`Stored` at once. That skips nats-py's ``fetch`` (a timed ``next_msg`` task per message
    and status checks), which cost more than everything else a rebuild does per event. A request
    the stream cannot fill ends with a 404/408 status: the read ends there, as a ``fetch`` that
    times out would. No data and no status for ``stall_s`` raises :class:`asyncio.TimeoutError`.
    """
    if end < start:
        return
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(start, 1), inactive_threshold=30.0, mem_storage=True,
    )
    nc = js._nc  # noqa: SLF001 - the connection the context was made from (nats-py has no public accessor)
    prefix = getattr(js, "_prefix", api.DEFAULT_PREFIX)
    info = await js.add_consumer(EVENTS_STREAM, config)
    wanted = min(info.num_pending, end - max(start, 1) + 1)  # at most this many messages to read
    ready: asyncio.Queue[list[Stored] | BaseException | None] = asyncio.Queue()
    pending: list[Stored] = []
    received = 0

    def flush() -> None:
        nonlocal pending
        if pending:
            ready.put_nowait(pending)
            pending = []

    def finish(outcome: BaseException | None) -> None:
        flush()
        ready.put_nowait(outcome)

    async def on_msg(msg: Msg) -> None:
        nonlocal received
        reply = msg.reply
        if not reply:  # a status: the pull request ended (404/408: the stream has no more) or failed
            status = (msg.headers or {}).get("Status", "")
            if status == "100":  # an idle heartbeat
                return
            if status in ("404", "408"):
                finish(None)
            else:
                description = (msg.headers or {}).get("Description", "")
                finish(nats.js.errors.APIError(code=int(status) if status.isdigit() else None,
                                               description=f"pull from {EVENTS_STREAM}: {status} {description}"))
            return
        stored = stored_from_msg(msg)
        if stored.seq > end:
            finish(None)
            return
        pending.append(stored)
        received += 1
        if stored.seq >= end or received >= wanted:
            finish(None)
        elif len(pending) >= batch:
            flush()

    sub = await nc.subscribe(nc.new_inbox(), cb=on_msg, pending_msgs_limit=0, pending_bytes_limit=0)
    subject = f"{prefix}.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{info.name}"
    requested = 0

    async def request() -> None:
        nonlocal requested
        n = min(batch, wanted - requested)
        if n > 0:
            await nc.publish(subject, b'{"batch":%d,"expires":%d}' % (n, 5_000_000_000), reply=sub.subject)
            requested += n

    try:
        if wanted <= 0:
            return
        for _ in range(depth):
            await request()
        while True:
            try:
                out = await asyncio.wait_for(ready.get(), stall_s) if ready.empty() else ready.get_nowait()
            except asyncio.TimeoutError:
                raise asyncio.TimeoutError(f"no message from {EVENTS_STREAM} for {stall_s:.0f}s") from None
            if out is None:
                return
            if isinstance(out, BaseException):
                raise out
            if out:
                await request()
                yield out
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(EVENTS_STREAM, info.name)


__all__ = ["Stored", "from_ns", "get_stored", "read_log", "stored_from_msg", "stream_bounds"]
