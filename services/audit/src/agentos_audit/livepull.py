"""The projector's reader of its durable consumer: pulled directly, gathered into batches.

nats-py's ``fetch`` waits for each message of a batch with a timed ``next_msg`` (a task and a timer
per message) and returns as soon as anything is there, so a live log of a few hundred events a
second was written one or two events per transaction. Here the messages land on a core
subscription whose callback only appends them to a buffer; one pull request is kept outstanding
(renewed when it is filled or ends) while the buffer is below a batch, so the buffer stays bounded;
and :meth:`LivePull.take` hands over what arrived, waiting up to ``wait_s`` after the first
message of a batch for more to join it. The wait overlaps the previous batch's write.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats.errors
import nats.js.errors
from agentos_kernel.faults import contained
from nats.aio.msg import Msg

#: A pull request expires after this long; a new one is sent when it does.
EXPIRES_S = 5.0


class LivePull:
    """A durable pull consumer read into a bounded buffer (see the module docstring)."""

    def __init__(self, nc: Any, next_subject: str, batch: int, *, expires_s: float = EXPIRES_S) -> None:
        self.nc, self.next_subject, self.batch, self.expires_s = nc, next_subject, batch, expires_s
        self.buffer: list[Msg] = []
        self.first_at = 0.0
        """Loop time at which the oldest buffered message arrived."""
        self.outstanding = 0
        """Messages the current pull request may still deliver."""
        self.heard_at = 0.0
        """Loop time of the last pull request sent or message/status received."""
        self.error: BaseException | None = None
        self._sub: Any = None
        self._arrived = asyncio.Event()
        self._enough = asyncio.Event()
        self._want = batch
        self._loop = asyncio.get_running_loop()

    async def start(self) -> LivePull:
        """Subscribe and send the first pull request."""
        self._sub = await self.nc.subscribe(
            self.nc.new_inbox(), cb=self._on_msg, pending_msgs_limit=0, pending_bytes_limit=0
        )
        await self._request()
        return self

    async def stop(self) -> None:
        """Unsubscribe (what is buffered is dropped: it was not acknowledged, so it comes again)."""
        self.wake()
        if self._sub is not None:
            with contained("unsubscribe the audit durable's pull inbox", nats.errors.Error, OSError):
                await self._sub.unsubscribe()
            self._sub = None

    def wake(self) -> None:
        """End a :meth:`take` that is waiting (it returns what it has)."""
        self._arrived.set()
        self._enough.set()

    async def _request(self) -> None:
        self.outstanding = self.batch
        self.heard_at = self._loop.time()
        body = b'{"batch":%d,"expires":%d}' % (self.batch, int(self.expires_s * 1e9))
        await self.nc.publish(self.next_subject, body, reply=self._sub.subject)

    async def _on_msg(self, msg: Msg) -> None:
        self.heard_at = self._loop.time()
        if not msg.reply:  # a status ending the pull request (or an idle heartbeat)
            headers = msg.headers or {}
            status = headers.get("Status", "")
            if status == "100":
                return
            if status not in ("404", "408"):  # 409: the consumer was deleted, changed, or refused the pull
                self.error = nats.js.errors.APIError(
                    code=int(status) if status.isdigit() else None,
                    description=f"pull from the audit durable: {status} {headers.get('Description', '')}",
                )
                self.wake()
                return
            self.outstanding = 0
        else:
            if not self.buffer:
                self.first_at = self.heard_at
                self._arrived.set()
            self.buffer.append(msg)
            self.outstanding -= 1
            if len(self.buffer) >= self._want:
                self._enough.set()
        if self.outstanding <= 0 and len(self.buffer) < self.batch:
            await self._request()

    async def take(self, n: int, wait_s: float, timeout: float) -> list[Msg]:
        """Up to ``n`` messages in arrival order: waits up to ``timeout`` for the first, then until
        ``wait_s`` after it arrived for the batch to fill. Empty when nothing came (or on :meth:`wake`)."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if not self.buffer:
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            if not self.buffer:
                await self._check_stalled()
                return []
        remaining = self.first_at + wait_s - self._loop.time()
        if len(self.buffer) < n and remaining > 0:
            self._want = n
            self._enough.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._enough.wait(), remaining)
            self._want = self.batch
        out = self.buffer[:n]
        del self.buffer[:n]
        if self.buffer:
            self.first_at = self._loop.time() - wait_s  # the rest waited already: the next take is at once
        if self.outstanding <= 0 and len(self.buffer) < self.batch and self._sub is not None:
            # A lost connection: the stall check renews the request once it is back.
            with contained("renew the audit durable's pull request", nats.errors.Error, OSError):
                await self._request()
        return out

    async def _check_stalled(self) -> None:
        """A pull request lost with its connection ends with neither messages nor a status: renew it."""
        if self._sub is not None and self._loop.time() - self.heard_at > self.expires_s + 1.0:
            await self._request()


__all__ = ["EXPIRES_S", "LivePull"]
