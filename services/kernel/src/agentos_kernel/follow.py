"""Following the log: every event on some subjects, from the start, then live, in log order.

A shared durable consumer gives each event to one replica of a service. State that every replica
must hold whole (the agents the fleet announced, every goal's progress) is folded instead from a
:class:`Follower`: an ephemeral consumer per replica that reads the log from its start (the
catch-up after a restart) and then keeps reading it live, so each replica sees every event, its
own and the other replicas' alike. A consumer lost with its connection or a server restart is made
again from the last sequence folded; nothing is skipped and nothing is folded twice.

:meth:`Follower.sync` is a read-your-log barrier: it returns once every event stored before it was
called has been folded (what a replica needs before it acts on work another replica handed over).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats.errors
from agentos_schemas import EVENTS_STREAM, Event, codec
from nats.js import api

from agentos_kernel.bus import Bus
from agentos_kernel.exceptions import BusUnavailable
from agentos_kernel.faults import FAULTS, contained
from agentos_kernel.tasks import cancel_and_wait

log = logging.getLogger("agentos.follow")
Apply = Callable[[Event[Any]], Awaitable[Any] | Any]


class Follower:
    """Folds every event on ``subjects`` into ``apply``: the whole log first, then live."""

    def __init__(
        self, bus: Bus, subjects: Sequence[str], apply: Apply, *, name: str, batch: int = 256, live_wait_s: float = 0.5
    ) -> None:
        self.bus, self.subjects, self.apply, self.name = bus, list(subjects), apply, name
        self.batch, self.live_wait_s = batch, live_wait_s
        self.last_seq = 0
        """The stream sequence of the last event read (folded, or skipped as undecodable)."""
        self.synced_at = float("-inf")
        """Loop time at which the log held nothing on ``subjects`` not yet folded."""
        self._want_sync = True
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._psub: Any = None
        self._received = 0
        """Messages read from the current consumer (its delivery sequence, once all are read)."""
        self._trouble = ""
        """Why the last round could not read (named when a sync times out), or "" after a good one."""

    async def start(self, timeout: float = 300.0) -> int:
        """Start following and return once the log, as it was now, has been folded (the catch-up);
        returns the last sequence read. Raises :class:`BusUnavailable` if that takes over ``timeout``."""
        self._task = asyncio.create_task(self._run(), name=f"follow:{self.name}")
        await self.sync(timeout)
        return self.last_seq

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._drop()

    async def restart(self, timeout: float = 300.0) -> int:
        """Fold the whole log again from its start (the caller has reset its state first)."""
        await self.stop()
        self.last_seq, self.synced_at = 0, float("-inf")
        return await self.start(timeout)

    async def sync(self, timeout: float = 30.0) -> None:
        """Return once every event stored before this call has been folded."""
        loop = asyncio.get_running_loop()
        since, deadline = loop.time(), loop.time() + timeout
        while self.synced_at < since:
            self._want_sync = True
            self._synced.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise BusUnavailable(
                    f"{self.name}: reading {self.subjects} did not catch up in {timeout:.0f}s "
                    f"(read up to stream seq {self.last_seq}; {self._trouble or 'no error reading'})"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._synced.wait()

    async def _drop(self) -> None:
        if self._psub is not None:
            # Called from the loop's own recovery too: only nats-py's errors can come (ValueError: its
            # pull subscription without an inbox), so nothing escapes to stop the loop.
            with contained(f"follower {self.name}: unsubscribe its consumer", nats.errors.Error, ValueError):
                await self._psub.unsubscribe()
            self._psub = None

    async def _subscribe(self) -> Any:
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, filter_subjects=self.subjects, inactive_threshold=120.0, mem_storage=True
        )
        if self.last_seq:
            config.deliver_policy, config.opt_start_seq = api.DeliverPolicy.BY_START_SEQUENCE, self.last_seq + 1
        else:
            config.deliver_policy = api.DeliverPolicy.ALL
        return await self.bus.js.pull_subscribe(subject="", stream=EVENTS_STREAM, config=config)

    async def _run(self) -> None:
        while True:
            try:
                self._psub = await self._subscribe()
                self._received = 0
                while True:
                    await self._round(self._psub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  (boundary: a lost consumer (reconnect, server restart or any failed round must not stop the follower: again from last_seq))
                self._trouble = f"last error: {exc!r}"
                log.warning("%s: following the log interrupted (%r); resubscribing", self.name, exc)
                FAULTS.note(f"follower {self.name}: read the log", exc, level=logging.DEBUG)  # logged above
                await self._drop()
                await asyncio.sleep(0.5)

    async def _round(self, psub: Any) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            msgs = await psub.fetch(self.batch, timeout=self.live_wait_s)
        except (TimeoutError, nats.errors.TimeoutError):
            msgs = []
        for msg in msgs:
            self._received += 1
            # last_seq moves only once the event was read: a decode that cannot finish now (its
            # claim-checked payload or a subject's key unavailable) raises, and the resubscription
            # starts again from this event instead of skipping it
            await self._apply_one(msg, msg.metadata.sequence.stream)
            self.last_seq = msg.metadata.sequence.stream
        self._trouble = ""
        if len(msgs) < self.batch and self._want_sync and await self._at_end(psub):
            self.synced_at, self._want_sync = started, False
            self._synced.set()

    async def _at_end(self, psub: Any) -> bool:
        """Whether nothing is left to deliver and everything delivered was read.

        Delivery is counted by the consumer's own sequence (one per message handed to this
        consumer), which needs no assumption about how far a filtered consumer's stream position
        has moved past the last matching event."""
        info = await psub.consumer_info()
        return bool(info.num_pending == 0 and (info.delivered.consumer_seq or 0) <= self._received)

    async def _apply_one(self, msg: Any, seq: int) -> None:
        try:
            event = await self.bus.decode(msg.data, msg.headers)
        except codec.DecodeError:
            return  # the consumers that own it dead-letter it
        try:
            result = self.apply(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # boundary: one event the caller's fold fails on must not stop the follower
            log.exception("%s: could not fold %s (seq %d)", self.name, event.type, seq)
            FAULTS.note(f"follower {self.name}: fold an event", exc, level=logging.DEBUG)  # logged above
