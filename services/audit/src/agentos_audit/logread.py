"""Reading stored messages of ``AGENTOS_EVENTS`` by stream sequence, exactly as JetStream keeps them.

:func:`read_log` pulls its consumer directly: pull requests are kept ahead of the caller and the
messages land on a core subscription whose callback turns each into a :class:`Stored` at once.
That skips nats-py's ``fetch`` (a timed ``next_msg`` task per message and its status checks), which
cost more than a rebuild's own work per event. A request the stream cannot fill ends with a
404/408 status, and the read ends there, as a ``fetch`` that timed out did; a read that hears
nothing for ``stall_s`` (a lost connection) raises rather than ending short.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import NamedTuple

import nats.errors
import nats.js.errors
from agentos_kernel.faults import contained
from agentos_schemas import EVENTS_STREAM
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PULL_EXPIRES_NS = 5_000_000_000


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


class _Pull:
    """The state of one direct pull: pull requests kept ahead of the reader, and the messages that
    arrived, grouped into batches, handed over through a queue."""

    def __init__(self, end: int, batch: int, wanted: int) -> None:
        self.end, self.batch, self.wanted = end, batch, wanted
        self.ready: asyncio.Queue[list[Stored] | BaseException | None] = asyncio.Queue()
        self.pending: list[Stored] = []
        self.received = self.requested = 0

    def _flush(self) -> None:
        if self.pending:
            self.ready.put_nowait(self.pending)
            self.pending = []

    def _finish(self, outcome: BaseException | None) -> None:
        self._flush()
        self.ready.put_nowait(outcome)

    async def on_msg(self, msg: Msg) -> None:
        """A delivered message, or a status that ends a pull request (no reply subject)."""
        if not msg.reply:
            headers = msg.headers or {}
            status = headers.get("Status", "")
            if status in ("404", "408"):  # the stream has no more (or not yet): the read ends here
                self._finish(None)
            elif status != "100":  # anything but an idle heartbeat is an error
                description = f"pull from {EVENTS_STREAM}: {status} {headers.get('Description', '')}"
                self._finish(
                    nats.js.errors.APIError(code=int(status) if status.isdigit() else None, description=description)
                )
            return
        stored = stored_from_msg(msg)
        if stored.seq > self.end:
            self._finish(None)
            return
        self.pending.append(stored)
        self.received += 1
        if stored.seq >= self.end or self.received >= self.wanted:
            self._finish(None)
        elif len(self.pending) >= self.batch:
            self._flush()

    def next_request(self) -> bytes | None:
        """The body of the next pull request (None once every wanted message is asked for)."""
        n = min(self.batch, self.wanted - self.requested)
        if n <= 0:
            return None
        self.requested += n
        return b'{"batch":%d,"expires":%d}' % (n, _PULL_EXPIRES_NS)


async def read_log(
    js: JetStreamContext,
    start: int,
    end: int,
    *,
    batch: int = 1024,
    depth: int = 2,
    stall_s: float = 30.0,
    subject: str | None = None,
) -> AsyncIterator[list[Stored]]:
    """Batches of stored messages with ``start <= seq <= end`` (on ``subject`` only, if given), in
    sequence order (sequences the stream no longer holds are skipped). No acks: an ephemeral consumer
    kept ``depth`` requests of ``batch`` ahead (module docs); silent for ``stall_s``: TimeoutError.
    """
    if end < start:
        return
    nc = js._nc  # the connection the context was made from (nats-py has no public accessor)
    info, pull = await _consumer(js, start, end, batch, subject)
    next_subject = f"{getattr(js, '_prefix', api.DEFAULT_PREFIX)}.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{info.name}"
    sub = await nc.subscribe(nc.new_inbox(), cb=pull.on_msg, pending_msgs_limit=0, pending_bytes_limit=0)

    async def request() -> None:
        body = pull.next_request()
        if body is not None:
            await nc.publish(next_subject, body, reply=sub.subject)

    try:
        if pull.wanted <= 0:
            return
        for _ in range(depth):
            await request()
        while (out := await _next_batch(pull, stall_s)) is not None:
            await request()
            yield out
    finally:
        with contained("unsubscribe a log read's inbox", nats.errors.Error, OSError):
            await sub.unsubscribe()
        # Left behind, the consumer goes by itself once inactive (``inactive_threshold``).
        with contained("delete a log read's ephemeral consumer", nats.errors.Error, OSError):
            await js.delete_consumer(EVENTS_STREAM, info.name)


async def _consumer(
    js: JetStreamContext, start: int, end: int, batch: int, subject: str | None = None
) -> tuple[api.ConsumerInfo, _Pull]:
    """An ephemeral, in-memory consumer from ``start`` without acks, and the reader of its messages."""
    config = api.ConsumerConfig(
        filter_subject=subject,
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(start, 1),
        inactive_threshold=30.0,
        mem_storage=True,
    )
    info = await js.add_consumer(EVENTS_STREAM, config)
    in_range = end - max(start, 1) + 1
    return info, _Pull(end, batch, in_range if info.num_pending is None else min(info.num_pending, in_range))


async def _next_batch(pull: _Pull, stall_s: float) -> list[Stored] | None:
    """The next batch the subscription's callback made ready; None once the read is complete."""
    try:
        out = pull.ready.get_nowait() if not pull.ready.empty() else await asyncio.wait_for(pull.ready.get(), stall_s)
    except TimeoutError:
        raise TimeoutError(f"no message from {EVENTS_STREAM} for {stall_s:.0f}s") from None
    if isinstance(out, BaseException):
        raise out
    return out


__all__ = ["Stored", "from_ns", "get_stored", "read_log", "stored_from_msg", "stream_bounds"]
