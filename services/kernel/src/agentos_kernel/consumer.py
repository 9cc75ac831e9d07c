"""Durable JetStream consumers: decode, validate, run the handler, ack, retry or dead-letter.

A consumer never dies on one bad message. An event that cannot be decoded or validated is
dead-lettered at once; a handler failure is redelivered with backoff and dead-lettered after
the last attempt. The dead letter keeps the bytes and headers (redacted by the bus, see
:mod:`agentos_kernel.guard`; the log keeps the original) and adds the reason.

The CloudEvent ``id`` is the event's identity: before a handler runs, the consumer claims the id
(:mod:`agentos_kernel.identity`), so a later copy of an event is acknowledged without running the
handler again and an id reused for other content is dead-lettered (``event_id_reused``).

A handler that fails because a dependency is down (:class:`~agentos_kernel.exceptions.Unavailable`,
or Postgres unreachable: :func:`agentos_kernel.db.postgres_down`) does not spend an attempt: the
message is held (kept in progress, not redelivered) and the handler run again with backoff until
the dependency is back, for up to ``hold_unavailable_s``; only then do redeliveries count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from agentos_schemas import Event, codec, dlq_subject
from agentos_schemas import subjects as s
from nats.aio.msg import Msg
from nats.js import api

from agentos_kernel import control, identity, tracing
from agentos_kernel.db import POSTGRES_DOWN_TYPES, postgres_down
from agentos_kernel.exceptions import Reject, Retry
from agentos_kernel.faults import FAULTS, contained
from agentos_kernel.guard import header_value
from agentos_kernel.identity import Claims, Seen
from agentos_kernel.redact import redact
from agentos_kernel.retry import HOLD

if TYPE_CHECKING:
    from agentos_kernel.bus import Bus

log = logging.getLogger("agentos.consumer")

Handler = Callable[[Event[Any]], Awaitable[None]]

DLQ_HEADERS = (
    "AgentOS-DLQ-Code",
    "AgentOS-DLQ-Reason",
    "AgentOS-DLQ-Consumer",
    "AgentOS-DLQ-Subject",
    "AgentOS-DLQ-Stream-Seq",
    "AgentOS-DLQ-Deliveries",
)


class Consumer:
    """One service's durable pull consumer on ``AGENTOS_EVENTS``.

    Args:
        durable: consumer name; replicas of a service share it to split the work.
        filter_subjects: subjects to receive (see :mod:`agentos_schemas.subjects`).
        handler: awaited with each validated event. Raise :class:`~agentos_kernel.Retry` or any
            exception to have it redelivered, :class:`~agentos_kernel.Reject` to dead-letter it.
        types: if given, events of other types are acknowledged and skipped without decoding.
        max_deliver: attempts before a failing message is dead-lettered.
        backoff: delay before each redelivery (the last value repeats).
        concurrency: handlers running at once (1 keeps the stream's order).
        ack_wait: seconds before an unacknowledged message is redelivered; long handlers
            are kept alive with in-progress acks.
        honour_halts: hold (in progress, not redelivered, not counted as an attempt) each message
            whose work a kill switch covers until it is lifted, and stop pulling while a switch
            covers everything this consumer receives (``halt.all``, or ``halt.tenant.<t>`` when
            every filter names tenant ``t``). Off for consumers that must keep folding facts.
        hold_unavailable_s: how long a message whose handler meets a dependency outage is held
            and retried in place (not counted as an attempt) before failures count again.
    """

    def __init__(
        self,
        bus: Bus,
        durable: str,
        filter_subjects: Sequence[str],
        handler: Handler,
        *,
        types: Collection[str] | None = None,
        max_deliver: int = 5,
        backoff: Sequence[float] = (0.2, 1.0, 5.0, 15.0),
        concurrency: int = 16,
        ack_wait: float = 30.0,
        deliver_new: bool = False,
        honour_halts: bool = True,
        hold_unavailable_s: float = 300.0,
    ) -> None:
        s.check_token("consumer", durable)
        self.bus = bus
        self.durable = durable
        self.filter_subjects = list(filter_subjects)
        self.handler = handler
        self.types = frozenset(types) if types is not None else None
        self.max_deliver = max_deliver
        self.backoff = tuple(backoff) or (1.0,)
        self.concurrency = concurrency
        self.ack_wait = ack_wait
        self.deliver_new = deliver_new
        self.dead_lettered = 0
        self.last_error: tuple[float, str] | None = None
        """When and why handling a message last failed unexpectedly (reported in the health record)."""
        self.copies = 0
        """Messages skipped as copies of an event this consumer already handled."""
        self.claims = Claims(bus, durable) if bus.settings.event_ids_ttl_s else None
        self.honour_halts = honour_halts
        self.hold_unavailable_s = hold_unavailable_s
        tenants = {f.split(".")[1] if f.count(".") >= 2 else "*" for f in self.filter_subjects}
        only = tenants.pop() if len(tenants) == 1 else "*"
        self.scope = control.Work(tenant=None if only in ("*", ">") else only)
        self._init_pull_state()

    def _init_pull_state(self) -> None:
        """The pull loop's state (see "pulling" below): no handler in flight, no pull open."""
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._sub: Any = None
        self._next = ""
        self._outstanding = 0
        """Messages the open pull request may still deliver (0: none open)."""
        self._heard = 0.0
        self._paused_until = 0.0
        self._wake = asyncio.Event()

    async def start(self) -> Consumer:
        config = api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.NEW if self.deliver_new else api.DeliverPolicy.ALL,
            max_deliver=self.max_deliver,
            ack_wait=self.ack_wait,
            max_ack_pending=max(1000, self.concurrency * 4),
            filter_subjects=self.filter_subjects,
        )
        js = self.bus.js
        if self.claims is not None:
            await identity.open_bucket(js, ttl_s=self.bus.settings.event_ids_ttl_s, replicas=self.bus.settings.replicas)
        try:
            await js.add_consumer(s.EVENTS_STREAM, config)
        except nats.js.errors.BadRequestError:
            # Exists with another config (e.g. new filters after an upgrade): update in place.
            config.deliver_policy = None
            await js.add_consumer(s.EVENTS_STREAM, config)
        prefix = getattr(js, "_prefix", api.DEFAULT_PREFIX)  # nats-py keeps the API prefix private
        self._next = f"{prefix}.CONSUMER.MSG.NEXT.{s.EVENTS_STREAM}.{self.durable}"
        self._sub = await self.bus.nc.subscribe(
            self.bus.nc.new_inbox(), cb=self._on_msg, pending_msgs_limit=0, pending_bytes_limit=0
        )
        self._loop_task = asyncio.create_task(self._run(), name=f"consumer:{self.durable}")
        return self

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop pulling, let in-flight handlers finish, hand back what could not finish."""
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._sub is not None:  # what the open pull still brings is redelivered later
            with contained(f"consumer {self.durable}: unsubscribe its pull inbox on stop", nats.errors.Error):
                await self._sub.unsubscribe()
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contained(f"consumer {self.durable}: flush its acks on stop", nats.errors.Error, OSError):
            await self.bus.nc.flush(timeout=5)  # acks and naks are sent before we return

    # -- pulling ----------------------------------------------------------------------------------
    # One pull request is open at a time, for as many messages as there are free handler slots
    # (in flight + still to come <= concurrency). Messages land on a core subscription whose
    # callback starts their handler at once: no fetch call, task or timer per message. A pull
    # ends when it delivered its count or expired (status 408); a new one goes out when a slot is
    # free. The server answers a pull for n at once with what it has, so a backlog comes in
    # batches and a lone event is not held back. A pull lost with its connection (no message or
    # status for a while) is replaced.
    PULL_EXPIRES_S = 5.0

    def _halted(self) -> bool:
        return self.honour_halts and control.state().covering(self.scope) is not None

    async def _pull(self) -> None:
        free = self.concurrency - len(self._inflight)
        if self._outstanding > 0 or free <= 0 or self._sub is None or self._stopping.is_set():
            return
        now = asyncio.get_running_loop().time()
        if now < self._paused_until or self._halted():
            return
        self._outstanding = free
        self._heard = now
        body = b'{"batch":%d,"expires":%d}' % (free, int(self.PULL_EXPIRES_S * 1e9))
        try:
            await self.bus.nc.publish(self._next, body, reply=self._sub.subject)
        except (nats.errors.Error, OSError) as exc:  # closed, draining, buffer full: the loop tries again
            self._outstanding = 0  # counted (a consumer that cannot pull shows), at debug: reconnects fail some
            FAULTS.note(f"consumer {self.durable}: send a pull request", exc, level=logging.DEBUG)

    async def _on_msg(self, msg: Msg) -> None:
        self._heard = asyncio.get_running_loop().time()
        if not msg.reply:  # a status: the pull ended (404/408), or was refused (409 …)
            status = (msg.headers or {}).get("Status", "")
            if status == "100":  # an idle heartbeat
                return
            self._outstanding = 0
            if status not in ("404", "408"):  # e.g. the consumer was deleted: try again in a second
                log.warning(
                    "%s: pull ended with %s %s", self.durable, status, (msg.headers or {}).get("Description", "")
                )
                self._paused_until = self._heard + 1.0
                return
            await self._pull()
            return
        self._outstanding = max(0, self._outstanding - 1)
        if self._outstanding == 0:
            self._wake.set()  # the pull is used up: the loop opens the next one
        if self._stopping.is_set():
            with contained(f"consumer {self.durable}: nak a message that came after stop", nats.errors.Error, OSError):
                await msg.nak()  # not ours to start any more: redelivered at once
            return
        task = asyncio.create_task(self._handle(msg))
        self._inflight.add(task)
        task.add_done_callback(self._done)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if self._halted():
                await control.state().wait_change(timeout=0.5)  # paused: pull nothing new
                continue
            if self._outstanding > 0 and loop.time() - self._heard > self.PULL_EXPIRES_S + 2.0:
                self._outstanding = 0  # the pull was lost (a reconnect): ask again
            await self._pull()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._outstanding == 0:
            self._wake.set()  # a slot is free and no pull is open: the loop sends one

    async def _handle(self, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            if self.types is not None and headers.get("ce-type") not in self.types and "ce-type" in headers:
                await msg.ack()
                return
            try:
                event = await self.bus.decode(msg.data, headers)
            except codec.DecodeError as exc:
                await self.dead_letter(msg, exc.code, exc.reason)
                return
            if self.types is not None and event.type not in self.types:
                await msg.ack()
                return
            if not await self._first_of_its_id(msg, event):
                return
            await self._run_handler(msg, event)
        except asyncio.CancelledError:
            with contained(f"consumer {self.durable}: nak a cancelled message", nats.errors.Error, OSError):
                await msg.nak()
            raise
        except Exception as exc:  # boundary: a bug in handling one message must not kill the consumer
            log.exception("%s: unexpected error on %s", self.durable, msg.subject)
            self.last_error = (time.time(), f"{msg.subject}: {type(exc).__name__}: {exc}"[:300])
            FAULTS.note(f"consumer {self.durable}: handle a message", exc, level=logging.DEBUG)  # logged above
            with contained(f"consumer {self.durable}: nak a message it failed on", nats.errors.Error, OSError):
                await msg.nak(delay=1.0)

    async def _first_of_its_id(self, msg: Msg, event: Event[Any]) -> bool:
        """Claim the event's id; False (the message acked or dead-lettered) if another message has."""
        if self.claims is None:
            return True
        seen, first = await self.claims.claim(event, msg.metadata.sequence.stream)
        if seen is Seen.NEW:
            return True
        if seen is Seen.COPY:
            self.copies += 1
            log.info(
                "%s: stream seq %s repeats event %s (first at seq %s): skipped",
                self.durable,
                msg.metadata.sequence.stream,
                event.id,
                first,
            )
            await msg.ack()
            return False
        await self.dead_letter(
            msg,
            "event_id_reused",
            f"event id {event.id!r} was already used by stream message {first} for"
            " other content (type, source, tenant, subject or data); an id names one"
            " fact: publish a new fact under a new id",
        )
        return False

    async def _unhandled(self, msg: Msg, event: Event[Any], code: str, reason: str) -> None:
        """Dead-letter an event its handler could not take, releasing its id's claim first so a
        later copy (the dead letter replayed) is handled."""
        if self.claims is not None:  # if this fails, the dead letter still goes out (a later copy is skipped)
            with contained(f"consumer {self.durable}: release a claim", nats.errors.Error, OSError, ValueError):
                await self.claims.release(event)  # (OSError: TimeoutError too; ValueError: an unreadable ack)
        await self.dead_letter(msg, code, reason)

    async def _run_handler(self, msg: Msg, event: Event[Any]) -> None:
        keepalive = asyncio.create_task(self._keepalive(msg))
        try:
            with control.working_on(control.work_of(event)), tracing.consume_span(event, self.durable):
                await self._call(event)
        except Reject as exc:
            await self._unhandled(msg, event, "handler_rejected", str(exc))
            return
        except Exception as exc:  # noqa: BLE001  (boundary: retried or dead-lettered, never stops the consumer)
            if not isinstance(exc, Retry):  # a Retry is the handler's own request, not a fault
                FAULTS.note(f"consumer {self.durable}: run the handler", exc)
            await self._retry_or_dead_letter(msg, event, exc)
            return
        finally:
            keepalive.cancel()
        await msg.ack()

    async def _call(self, event: Event[Any]) -> None:
        """Run the handler; with ``honour_halts`` a halted message is held (kept alive by the
        keepalive, so neither redelivered nor counted) and the handler re-run once it is lifted.
        A dependency outage holds it the same way (see the module docs)."""
        work = control.current_work()
        loop = asyncio.get_running_loop()
        hold_until, held = loop.time() + self.hold_unavailable_s, 0
        while True:
            if self.honour_halts:
                await control.state().wait_clear(work)
            try:
                await self.handler(event)
                return
            except control.Halted as exc:
                if not self.honour_halts:
                    raise
                key = exc.halt.key
                while key in control.state().halts:
                    await control.state().wait_change(timeout=5.0)
            except POSTGRES_DOWN_TYPES as exc:
                pause = HOLD.delay(held)
                if not postgres_down(exc) or loop.time() + pause > hold_until:
                    raise
                log.warning("%s: %s: %r; held, trying again in %.1fs", self.durable, event.type, exc, pause)
                await asyncio.sleep(pause)
                held += 1

    async def _retry_or_dead_letter(self, msg: Msg, event: Event[Any], exc: Exception) -> None:
        delivered = msg.metadata.num_delivered or 1
        reason = f"{type(exc).__name__}: {exc}"
        if delivered >= self.max_deliver:
            await self._unhandled(msg, event, "handler_failed", f"after {delivered} attempts: {reason}")
            return
        delay = getattr(exc, "delay", None)
        if delay is None:
            delay = self.backoff[min(delivered - 1, len(self.backoff) - 1)]
        log.info("%s: attempt %d failed (%s); retry in %.1fs", self.durable, delivered, reason, delay)
        await msg.nak(delay=delay)

    async def _keepalive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            with contained(f"consumer {self.durable}: keep a message in progress", nats.errors.Error, OSError):
                await msg.in_progress()  # lost, the message may be redelivered while it is handled

    async def dead_letter(self, msg: Msg, code: str, reason: str) -> None:
        """Copy the original bytes and headers to ``AGENTOS_DLQ`` with the reason, then ack."""
        meta = msg.metadata
        headers = {k: v for k, v in (msg.headers or {}).items() if k not in DLQ_HEADERS}
        headers.pop("Nats-Msg-Id", None)
        seq = str(meta.sequence.stream)
        headers.update(
            {
                "Nats-Msg-Id": f"{self.durable}:{seq}",
                "AgentOS-DLQ-Code": code,
                "AgentOS-DLQ-Reason": header_value(redact(reason)),
                "AgentOS-DLQ-Consumer": self.durable,
                "AgentOS-DLQ-Subject": msg.subject,
                "AgentOS-DLQ-Stream-Seq": seq,
                "AgentOS-DLQ-Deliveries": str(meta.num_delivered or 1),
            }
        )
        await self.bus.publish_raw(dlq_subject(self.durable), msg.data, headers)
        self.dead_lettered += 1
        log.warning("%s: dead-lettered stream seq %s (%s: %s)", self.durable, seq, code, redact(reason))
        await msg.ack()
