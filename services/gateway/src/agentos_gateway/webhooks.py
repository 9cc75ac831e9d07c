"""Standard Webhooks: signature and timestamp checks, and replay protection across restarts and replicas.

Verification uses the ``standardwebhooks`` package on the raw body bytes, once per configured
secret (two during a rotation; either verifies). The timestamp is checked first against the
configured tolerance, so a stale delivery is told so rather than "bad signature".

Replay protection (``webhook-id`` seen before: a 2xx no-op, not a second goal). A delivery is
identified by (source, ``webhook-id``): the replay record's key, and what the ids of the events it
maps to derive from, so the same ``webhook-id`` from two sources is two deliveries. The window is
``AGENTOS_GATEWAY_WEBHOOK_DEDUP_TTL_S`` (30 days; at least the timestamp tolerance, so a captured
delivery cannot be replayed once its record is gone). One KV round trip is on the critical path,
the record is written behind it:

1. Look the id up in this process's memory of recent deliveries, then in the
   ``AGENTOS_GATEWAY_WEBHOOKS`` KV bucket; if either has it, answer ``200 {"duplicate": true}``.
2. Otherwise publish the mapped events (acknowledged by the stream before the answer) with ids
   derived from (source, webhook-id) or carried by the signed CloudEvent, so JetStream's
   ``Nats-Msg-Id`` dedup (120 s window) stores each event once even when two replicas handle
   the same delivery at once; if the stream says every event was a duplicate, the answer is
   ``200 {"duplicate": true}`` too.
3. Then record the id: in memory at once, and in the bucket by a background writer that
   pipelines many records' acks together (retrying until stored). The record lands in
   milliseconds, long inside the 120 s window in which step 2 already protects against a
   replay, so a replay after a restart or on another replica is a no-op.

A redelivery after the window (or after a gateway died between step 2 and its record, and more
than 120 s later) is published again under the same event ids; every consumer claims the ids it
handles (``agentos_kernel.identity``), so the copy starts no second goal and has no second effect.
Nothing is lost: if publishing fails no record is written and the sender's retry publishes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from agentos_kernel.faults import FAULTS
from agentos_kernel.replies import Replies, pub_ack
from agentos_kernel.retry import Backoff
from agentos_kernel.tasks import cancel_and_wait
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from agentos_gateway.kv import safe_key
from agentos_gateway.problems import Problem, bus_unavailable
from agentos_gateway.settings import WebhookSource

_encoder = msgspec.json.Encoder()
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
log = logging.getLogger("agentos.gateway.webhooks")
#: Pauses between tries of a replay record's write.
PUT_RETRY = Backoff(first_s=0.1, cap_s=5.0)


class Verifier:
    """Checks one source's deliveries against its one or two secrets."""

    def __init__(self, source: str, config: WebhookSource, tolerance_s: int) -> None:
        self.source = source
        self.tolerance_s = tolerance_s
        self._webhooks = [Webhook(secret) for secret in config.secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float | None = None) -> str:
        """The delivery's ``webhook-id`` if its signature and timestamp are good; 401 otherwise."""
        missing = [h for h in HEADERS if not headers.get(h)]
        if missing:
            raise Problem(
                401, "missing_signature_headers", f"missing Standard Webhooks header(s): {', '.join(missing)}"
            )
        stamp = headers["webhook-timestamp"]
        try:
            sent = float(stamp)
        except ValueError:
            raise Problem(401, "bad_timestamp", f"webhook-timestamp {stamp[:40]!r} is not Unix seconds") from None
        age = (time.time() if now is None else now) - sent
        if abs(age) > self.tolerance_s:
            when = "old" if age > 0 else "in the future"
            raise Problem(
                401,
                "stale_timestamp",
                f"webhook-timestamp is {abs(age):.0f}s {when}; the tolerance"
                f" is {self.tolerance_s}s (a replay, or the sender's clock is wrong)",
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(400, "invalid_encoding", "webhook body is not valid UTF-8") from None
        plain = {h: headers[h] for h in HEADERS}
        for webhook in self._webhooks:
            try:
                webhook.verify(text, plain, json_parse=False)
                return plain["webhook-id"]
            except (WebhookVerificationError, ValueError):
                continue
        raise Problem(401, "bad_signature", f"no webhook-signature matches a secret of source {self.source!r}")


def sign(secret: str, webhook_id: str, body: bytes, timestamp: float | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` (what a sender does; used by tests and the benchmark)."""
    when = dt.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, dt.UTC)
    signature = Webhook(secret).sign(webhook_id, when, body.decode("utf-8"))
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def _stored(reply: Msg) -> bool:
    """Whether a publish reply says the record was stored."""
    try:
        pub_ack(reply)
    except (nats.errors.Error, nats.js.errors.Error, ValueError):
        return False
    return True


class ReplayGuard:
    """Remembers which webhook ids became events (see the module docs for the protocol)."""

    RECENT = 100_000
    """How many recent deliveries each process remembers in memory (a positive cache only)."""
    ACK_WAIT_S = 5.0

    def __init__(self, kv: KeyValue, replies: Replies, ttl_s: float = 30 * 24 * 3600) -> None:
        self.kv = kv
        self.replies = replies
        """The Bus's :class:`~agentos_kernel.replies.Replies`: look-ups (direct gets) and records
        are pipelined on it, with no task, timer or JSON API parse per delivery."""
        self.ttl_s = ttl_s
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._queue: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.written = 0
        self.failed = 0
        self._pending = 0

    def key(self, source: str, webhook_id: str) -> str:
        """The bucket key of one delivery."""
        return f"{source}.{safe_key(source, webhook_id)}"

    async def seen(self, source: str, webhook_id: str) -> dict[str, Any] | None:
        """What the first delivery of this id produced, or None if it is new."""
        key = self.key(source, webhook_id)
        recent = self._recent.get(key)
        if recent is not None and time.time() - recent.get("at", 0.0) < self.ttl_s:
            return recent
        try:  # a direct get of the key's last message (the bucket allows direct gets)
            msg = await self.replies.kv_get(self.kv._js._prefix, self.kv._stream, f"{self.kv._pre}{key}")
        except (TimeoutError, nats.errors.Error) as exc:
            raise bus_unavailable(exc) from None
        if msg is None or not msg.data:
            return None
        record: dict[str, Any] = msgspec.json.decode(msg.data)
        if time.time() - record.get("at", 0.0) >= self.ttl_s:
            return None  # outside the window (the bucket's TTL may be longer than the setting)
        return record

    def remember(self, source: str, webhook_id: str, record: dict[str, Any]) -> None:
        """Record that this id was turned into events: in memory now, in the bucket shortly."""
        key = self.key(source, webhook_id)
        self._recent[key] = record
        self._recent.move_to_end(key)
        if len(self._recent) > self.RECENT:
            self._recent.popitem(last=False)
        self._queue.append((key, _encoder.encode(record)))
        self._pending += 1
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="gateway-webhook-records")

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                await self._write(batch)

    async def _write(self, batch: list[tuple[str, bytes]]) -> None:
        """Store records with their acks in flight together; one by one (``put``) on any failure."""
        futures: list[asyncio.Future[Any]] = []
        for key, value in batch:  # records are plain KV puts: publishes to the key's subject
            try:
                futures.append(await self.replies.publish(f"{self.kv._pre}{key}", value))
            except (nats.errors.Error, OSError):  # reconnecting, too many pending: a plain put below
                futures.append(asyncio.get_running_loop().create_future())
        await asyncio.wait(futures, timeout=self.ACK_WAIT_S)
        for (key, value), future in zip(batch, futures, strict=True):
            if not future.done():
                future.cancel()
            if future.cancelled() or future.exception() is not None or not _stored(future.result()):
                await self._put(key, value)
            else:
                self.written += 1
            self._pending -= 1

    async def _put(self, key: str, value: bytes) -> None:
        last: Exception | None = None
        for attempt in range(8):  # ~20 s, well inside the stream's 120 s duplicate window
            try:
                await self.kv.put(key, value)
                self.written += 1
                return
            except (nats.errors.Error, OSError, ValueError) as exc:  # ValueError: an ack that is not JSON
                last = exc
                await PUT_RETRY.sleep(attempt)
        self.failed += 1
        log.warning("could not record webhook delivery %s: %r", key, last)
        if last is not None:  # counted: a replay of it is published again (the consumers' id claims dedupe it)
            FAULTS.note("record a webhook delivery in the replay bucket", last)

    @property
    def pending(self) -> int:
        """Records not yet stored in the bucket."""
        return self._pending

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every record is stored (at shutdown), then stop the writer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pending and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._writer is not None:
            await cancel_and_wait(self._writer)
            self._writer = None
