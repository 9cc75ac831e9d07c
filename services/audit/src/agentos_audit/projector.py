"""The live projection: every stored event, in stream order, into the chain and ``events``.

One writer per schema (a session advisory lock elects it; other replicas wait). The writer's
position is the chain head in Postgres, written in the same transaction as the rows, so it is
exact whatever the consumer acknowledged. It reads through the durable consumer ``audit``
(recreated at the head on start; ``AckPolicy.ALL``, so one ack after each commit covers the
batch), pulled directly and gathered into batches (:mod:`agentos_audit.livepull`: a batch waits up
to ``batch_wait_s`` after its first message for more, while the previous one is written), and fills
any hole in the delivered sequences (redeliveries out of order) straight from the stream by
sequence. Batches are written on the connection that holds the writer lock, so a writer that lost
its lock (its session ended) cannot write. Messages that are not valid events are chained as
``rejected`` and dead-lettered exactly as :meth:`agentos_kernel.Consumer.dead_letter` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
import nats.js.errors
from agentos_kernel import Bus, Consumer
from agentos_kernel.db import Connection
from agentos_kernel.faults import FAULTS, contained
from agentos_kernel.retry import Backoff
from agentos_schemas import EVENTS_STREAM
from agentos_schemas.subjects import EVENTS_SUBJECTS
from asyncpg.pool import PoolConnectionProxy
from nats.js import api

from agentos_audit import schema as sch
from agentos_audit import tree
from agentos_audit.checkpoints import Checkpointer
from agentos_audit.derive import Rejection
from agentos_audit.items import Letter, derive_inline, derive_item
from agentos_audit.lifecycle import adopt_stream
from agentos_audit.livepull import LivePull
from agentos_audit.logread import Stored, get_stored, stored_from_msg
from agentos_audit.publish import Publisher
from agentos_audit.signing import Signer
from agentos_audit.writer import HeadMoved, Item, checkpoint_due, write_batch

log = logging.getLogger("agentos.audit")
#: Pauses between tries of a batch write while Postgres is unreachable.
WRITE_RETRY = Backoff(first_s=0.2, cap_s=5.0)
_DATA_ERRORS = (asyncpg.DataError, UnicodeEncodeError)
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)
_QUERY_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def lost(conn: Connection) -> bool:
    """Whether a pooled connection's session is gone. When its server connection drops, asyncpg
    hands the connection back to the pool by itself, and every call on it, ``is_closed()``
    included, then raises ``InterfaceError``: code that handles a database error must ask here,
    never the connection directly."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


class Projector:
    """Projects ``AGENTOS_EVENTS`` into one schema until stopped."""

    def __init__(
        self,
        bus: Bus,
        pool: asyncpg.Pool,
        *,
        schema: str,
        durable: str = "audit",
        signer: Signer | None = None,
        batch: int = 512,
        checkpoint_every: int = 1000,
        checkpoint_idle_s: float = 10.0,
        checkpoint_interval_s: float = 60.0,
        batch_wait_s: float = 0.05,
        status: dict[str, Any] | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.bus, self.pool, self.schema, self.durable = bus, pool, sch.check_schema(schema), durable
        self.batch, self.every, self.batch_wait_s = batch, checkpoint_every, batch_wait_s
        self.dlq = Consumer(bus, durable, list(EVENTS_SUBJECTS), self._unused)
        self.status = status if status is not None else {}
        publisher = publisher or Publisher(bus, self.schema, "agentos.local/audit", status=self.status)
        self.checkpoints = (
            Checkpointer(
                signer, publisher, every=checkpoint_every, idle_s=checkpoint_idle_s, interval_s=checkpoint_interval_s
            )
            if signer is not None
            else None
        )
        self.partitions = sch.Partitions(self.schema)
        self.head = sch.Head(0, bytes(32))
        self.stream_created = ""
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pull: LivePull | None = None
        self._conn: PoolConnectionProxy[asyncpg.Record] | None = None
        """The connection holding the writer lock; batches are written on it."""
        self._idle_since = self._checked_at = 0.0
        self.planned = 0
        """The last sequence handed to the writer (the head once nothing is in flight)."""
        self._pending: asyncio.Future[None] | None = None

    async def _unused(self, event: Any) -> None:  # the DLQ helper consumer is never started
        raise RuntimeError("not used")

    async def start(self) -> Projector:
        """Start projecting in the background (as soon as this replica is the writer)."""
        self._task = asyncio.create_task(self._run(), name=f"audit-projector:{self.schema}")
        return self

    async def stop(self) -> None:
        """Finish the batch in hand, sign the head, release the leadership."""
        self._stopping.set()
        if self._pull is not None:
            self._pull.wake()
        if self._task is not None:
            await self._task

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._conn is None:
                    self._conn = await self._lead()
                    if self._conn is None:
                        return
                await self._prepare()
                await self._loop()
                await self._sign_head()
            except Exception as exc:  # boundary: the projection resumes after any failure
                log.exception("audit: projector error; resuming in 1s")
                FAULTS.note("project the log into the audit chain", exc, level=logging.DEBUG)  # logged just above
                self._failed(exc)
                await self._drop_lost_lock()
                await self._sleep(1.0)
        await self._unbind()
        lock, self._conn = self._conn, None
        if lock is not None and not lost(lock):
            with contained("give up the audit writer lock on the way out", *_QUERY_ERRORS):
                await lock.execute("SELECT pg_advisory_unlock_all()")
            with contained("return the audit writer's connection on the way out (best effort: any failure)"):
                await self.pool.release(lock)

    def _failed(self, exc: BaseException) -> None:
        """Show why the projection does not advance in the service's status (until it does)."""
        self.status["audit_error"] = f"{type(exc).__name__}: {exc}"[:300]
        self.status["audit_error_at"] = time.time()

    def _advanced(self) -> None:
        self.status["audit_head_seq"] = self.head.seq
        self.status["audit_progress_at"] = time.time()
        self.status["audit_error"] = None

    async def _drop_lost_lock(self) -> None:
        """Forget the writer connection once its session ended (its advisory lock ended with it):
        the next round leads again. Never raises, so the loop always resumes."""
        lock = self._conn
        if lock is None or not lost(lock):
            return
        self._conn = None
        with contained("return the lost audit writer's connection (best effort: any failure)"):
            await self.pool.release(lock)

    async def _unbind(self) -> None:
        if self._pull is not None:
            await self._pull.stop()
            self._pull = None

    async def _lead(self) -> PoolConnectionProxy[asyncpg.Record] | None:
        """Wait until this replica holds the schema's writer lock (None if stopped first)."""
        while not self._stopping.is_set():
            conn = await self.pool.acquire()
            try:
                if await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"agentos-audit:{self.schema}"):
                    return conn
            except BaseException:
                with contained("return a connection after a failed writer-lock attempt (best effort: any failure)"):
                    await self.pool.release(conn)
                raise
            await self.pool.release(conn)
            await self._sleep(2.0)
        return None

    async def _prepare(self) -> None:
        """Find the head, and (re)create the durable consumer right after it."""
        info = await self.bus.js.stream_info(EVENTS_STREAM)
        self.stream_created = info.created.isoformat() if info.created else ""
        await adopt_stream(self.pool, self.schema, self.stream_created)
        self.partitions = sch.Partitions(self.schema)
        self.head = await tree.start_head(self._writer(), self.schema, info.state.first_seq)
        self.planned = self.head.seq
        if self.checkpoints is not None:
            await self.checkpoints.start(self.pool, self.schema, self.head)
        await self._bind(self.head.seq + 1)
        self._advanced()

    async def _bind(self, start: int, *, fresh: bool = False) -> None:
        """Bind to the durable consumer; (re)create it at ``start`` when it is missing, of another
        kind, or ``fresh`` is asked (the position that counts is the chain head, not the ack floor)."""
        js = self.bus.js
        await self._unbind()
        if not fresh:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                info = await js.consumer_info(EVENTS_STREAM, self.durable)
                delivered = info.delivered.stream_seq if info.delivered else 0
                if info.config.ack_policy == api.AckPolicy.ALL and (delivered or 0) < start:
                    self._pull = await self._puller()
                    return
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(EVENTS_STREAM, self.durable)
        await js.add_consumer(
            EVENTS_STREAM,
            api.ConsumerConfig(
                durable_name=self.durable,
                ack_policy=api.AckPolicy.ALL,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=max(start, 1),
                ack_wait=60.0,
                max_deliver=-1,
                max_ack_pending=self.batch * 4,
                filter_subjects=list(EVENTS_SUBJECTS),
            ),
        )
        self._pull = await self._puller()

    async def _puller(self) -> LivePull:
        js = self.bus.js
        prefix = getattr(js, "_prefix", api.DEFAULT_PREFIX)  # nats-py keeps the API prefix private
        subject = f"{prefix}.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{self.durable}"
        return await LivePull(self.bus.nc, subject, self.batch).start()

    async def _fetch(self) -> list[Any]:
        """The next batch (waiting up to ``batch_wait_s`` after its first message for more); empty
        after a second without messages, or at once when the projector is asked to stop."""
        if self._pull is None or self._stopping.is_set():
            return []
        return await self._pull.take(self.batch, self.batch_wait_s, 1.0)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        ahead: asyncio.Future[list[Any]] | None = None
        try:
            while not self._stopping.is_set():
                msgs, ahead = await (ahead or asyncio.ensure_future(self._fetch())), None
                if not msgs:
                    await self._settle()
                    await self._idle(loop.time() - self._idle_since)
                    continue
                ahead = await self._take(msgs)
                self._idle_since = loop.time()
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            await self._settle()

    async def _take(self, msgs: list[Any]) -> asyncio.Future[list[Any]] | None:
        """Derive a fetched batch while the previous one is being written, then hand it to the
        writer. Returns the prefetch of the next batch (None after re-reading from the head)."""
        delivered = list(zip(map(stored_from_msg, msgs), msgs, strict=True))
        newest_stored, newest = max(delivered, key=lambda d: d[0].seq)
        distance = newest_stored.seq - self.planned
        stored = {s.seq: s for s, _ in delivered if s.seq > self.planned}
        if distance > self.batch * 4 or (not stored and -distance > self.batch * 4):
            await self._settle()
            await self._bind(self.head.seq + 1, fresh=True)  # far from the head: re-read from it
            return None
        ahead = asyncio.ensure_future(self._fetch())  # the next batch arrives meanwhile
        items = await self._derive(stored, self.planned)
        await self._settle()
        if items and items[0].seq != self.head.seq + 1:  # the previous write did not end where planned
            items = await self._derive({k: v for k, v in stored.items() if k > self.head.seq}, self.head.seq)
        self._pending = asyncio.ensure_future(self._commit(items, newest))
        self.planned = items[-1].seq if items else self.head.seq
        return ahead

    async def _settle(self) -> None:
        """Wait for the write in flight: its commit, then its acknowledgement."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending
        self.planned = self.head.seq

    async def _commit(self, items: list[Item], newest: Any) -> None:
        if items:
            await self._write(items)
        await newest.ack()  # AckPolicy.ALL: covers every message up to it

    async def _idle(self, idle_s: float) -> None:
        """Sign the head after a quiet spell; re-read from the head if the durable skipped past it."""
        self.status["audit_progress_at"] = time.time()  # nothing waiting: as far along as it can be
        if self.checkpoints is not None and self.checkpoints.due(self.head, idle_s):
            await self._sign_head()
        now = asyncio.get_running_loop().time()
        if idle_s > 5.0 and now - self._checked_at > 5.0:
            self._checked_at = now
            info = await self.bus.js.stream_info(EVENTS_STREAM)
            if info.state.last_seq > self.head.seq:
                log.warning(
                    "audit: durable idle at seq %d behind the log's %d; re-reading", self.head.seq, info.state.last_seq
                )
                await self._bind(self.head.seq + 1, fresh=True)

    async def _derive(self, stored: dict[int, Stored], after: int) -> list[Item]:
        """Items for ``after+1 .. max(stored)``, holes read from the stream, rejects dead-lettered."""
        items: list[Item] = []
        max_bytes = self.bus.settings.max_event_bytes
        for seq in range(after + 1, max(stored, default=after) + 1):
            message = stored.get(seq) or await get_stored(self.bus.js, seq)
            item = derive_inline(message, max_bytes) if message is not None else None
            items.append(item if item is not None else await derive_item(self.bus, message, seq))
            outcome = items[-1].outcome
            if message is not None and isinstance(outcome, Rejection):
                await self.dlq.dead_letter(
                    Letter(message),  # pyright: ignore[reportArgumentType]  (typed Msg; Letter has what it reads)
                    outcome.code,
                    outcome.reason,
                )
        return items

    async def _write(self, items: list[Item]) -> None:
        failures, old = 0, self.head.seq
        while True:
            try:
                self.head = await write_batch(
                    self._writer(),
                    self.schema,
                    self.head,
                    items,
                    self.partitions,
                    sign=self.checkpoints.sign if self.checkpoints else None,
                    every=self.every,
                )
                await self._wrote(old, items)
                break
            except HeadMoved as exc:
                log.warning("audit: %s; re-reading the head", exc)
                self.head = await tree.start_head(self._writer(), self.schema, 1)
                if self.checkpoints is not None:  # what was signed and written meanwhile is not this one's count
                    await self.checkpoints.start(self._writer(), self.schema, self.head)
                break
            except _DATA_ERRORS:
                await self._write_one_by_one(items)
                await self._wrote(old, items, signed=False)
                break
            except _CONNECTION_ERRORS as exc:
                if self._stopping.is_set() or lost(self._writer()):
                    raise  # without its session the writer lock is gone: lead again first
                self._failed(exc)
                delay = WRITE_RETRY.delay(failures)
                log.warning("audit: write failed (%s); retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                failures += 1
        self._advanced()

    async def _wrote(self, old: int, items: list[Item], *, signed: bool = True) -> None:
        """Count the batch for the checkpoint schedule; publish the checkpoint its transaction
        signed, or sign one if it is due (written one by one, the batch signed none)."""
        if self.checkpoints is None:
            return
        due = checkpoint_due(old, self.head.seq, self.every)
        self.checkpoints.wrote(old, self.head, items, signed=signed)
        if signed and due:
            await self.checkpoints.publisher.flush(self.pool)
        elif due or self.checkpoints.due(self.head, None):
            await self._sign_head()

    async def _write_one_by_one(self, items: list[Item]) -> None:
        """Isolate the rows Postgres refuses: each becomes a ``rejected`` chain entry."""
        for item in items:
            try:
                self.head = await write_batch(self._writer(), self.schema, self.head, [item], self.partitions)
            except _DATA_ERRORS as exc:
                log.warning("audit: stream seq %d refused by Postgres: %s", item.seq, exc)
                refused = Item(item.seq, item.raw, Rejection("storage", f"{type(exc).__name__}: {exc}"))
                self.head = await write_batch(self._writer(), self.schema, self.head, [refused], self.partitions)

    def _writer(self) -> PoolConnectionProxy[asyncpg.Record]:
        if self._conn is None:
            raise RuntimeError("the projector writes only while it holds the writer lock")
        return self._conn

    async def _sign_head(self) -> None:
        """Checkpoint the head if it is not signed yet; publish what is not published yet."""
        if self.checkpoints is not None:
            await self.checkpoints.sign_head(self.pool, self.schema, self.head)


__all__ = ["Projector"]
