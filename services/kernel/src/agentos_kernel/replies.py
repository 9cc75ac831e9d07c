"""Pipelined request-reply on one NATS connection: JetStream publishes and KV direct gets.

nats-py's ``publish_async`` and ``request`` cost, per call, a task (``wait_for`` over a
semaphore), a timer, random bytes for the reply token, and a JSON parse into a dataclass for
the ack. On a hot path (the gateway answers each request only after its events are stored)
that is most of the client's CPU per message. :class:`Replies` does the same protocol with
less: one wildcard inbox subscription per process, a counter as the reply token, a plain
future per request, one sweeper task that fails every request not answered within its
deadline (no timer per request), and acks decoded by msgspec into :class:`PubAck`.

What it does not change: a publish carries the caller's headers (``Nats-Msg-Id`` among them),
so a caller that sees :class:`TimeoutError` publishes again with the same id and the stream
stores the event once (the Bus's ``publish_raw`` does this).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from agentos_kernel.faults import contained

_NO_RESPONDERS = "503"
_NOT_FOUND = "404"
_KV_DELETED = ("DEL", "PURGE")


class PubAck(msgspec.Struct, frozen=True):
    """A JetStream publish acknowledgement (the fields callers read of nats-py's ``PubAck``)."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    domain: str | None = None


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int | None = None
    description: str | None = None


class _AckDoc(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    domain: str | None = None
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_AckDoc)


def pub_ack(msg: Msg) -> PubAck:
    """The ack in a reply to a JetStream publish; raises nats-py's errors for a refusal."""
    if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
        raise nats.js.errors.NoStreamResponseError
    doc = _ack_decoder.decode(msg.data)
    if doc.error is not None:
        raise nats.js.errors.APIError.from_error(msgspec.structs.asdict(doc.error))
    return PubAck(doc.stream, doc.seq, doc.duplicate, doc.domain)


class Replies:
    """Requests whose replies come back on one wildcard inbox (see the module docs)."""

    SWEEP_S = 0.1

    def __init__(self, nc: NATS, *, timeout_s: float = 5.0) -> None:
        self.nc = nc
        self.timeout_s = timeout_s
        self._prefix = ""
        self._pending: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        self._count = 0
        self._sub: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None

    async def _start(self) -> None:
        self._starting = self._starting or asyncio.Lock()
        async with self._starting:
            if self._sub is not None:
                return
            prefix = f"{self.nc._inbox_prefix.decode()}.{self.nc._nuid.next().decode()}."
            self._sub = await self.nc.subscribe(prefix + "*", cb=self._on_reply)
            self._prefix = prefix
            self._sweeper = asyncio.create_task(self._sweep(), name="nats-replies-sweeper")

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> asyncio.Future[Msg]:
        """Send now; the returned future gets the reply, or :class:`TimeoutError` after ``timeout_s``."""
        if self._sub is None:
            await self._start()
        loop = asyncio.get_running_loop()
        self._count += 1
        token = format(self._count, "x")
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = (future, loop.time() + self.timeout_s)
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            self._pending.pop(token, None)
            raise
        return future

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None = None,
    ) -> asyncio.Future[Msg]:
        """A JetStream publish with its ack pending; read the ack with :func:`pub_ack`."""
        return await self.request(subject, payload, headers)

    async def kv_get(self, api_prefix: str, stream: str, subject: str) -> Msg | None:
        """The last message on ``subject`` of a stream that allows direct gets (a KV bucket's
        key), or None if there is none or it is a delete or purge marker."""
        msg = await (await self.request(f"{api_prefix}.DIRECT.GET.{stream}.{subject}"))
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == _NOT_FOUND:
            return None
        if status == _NO_RESPONDERS:
            raise nats.js.errors.ServiceUnavailableError
        if status:
            raise nats.js.errors.APIError(code=int(status), description=headers.get("Description"))
        if headers.get("KV-Operation") in _KV_DELETED:
            return None
        return msg

    @property
    def pending(self) -> int:
        """Requests not yet answered or timed out."""
        return len(self._pending)

    async def _on_reply(self, msg: Msg) -> None:
        item = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if item is not None and not item[0].done():
            item[0].set_result(msg)

    async def _sweep(self) -> None:
        # One deadline per request, all the same length: the dict's order is the deadlines' order.
        loop = asyncio.get_running_loop()
        pending = self._pending
        while True:
            await asyncio.sleep(self.SWEEP_S)
            now = loop.time()
            while pending:
                token = next(iter(pending))
                future, deadline = pending[token]
                if deadline > now:
                    break
                del pending[token]
                if not future.done():
                    future.set_exception(TimeoutError(f"no reply within {self.timeout_s}s"))

    async def close(self) -> None:
        """Stop the sweeper, unsubscribe, and fail what is still pending."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with (
                contextlib.suppress(asyncio.CancelledError),
                contained("stop the replies' sweeper on close (any error it ended with: the rest still closes)"),
            ):
                await self._sweeper
            self._sweeper = None
        if self._sub is not None:
            with contained("unsubscribe the replies' inbox on close", nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(TimeoutError("the connection's replies are closed"))
        self._pending.clear()


__all__ = ["PubAck", "Replies", "pub_ack"]
