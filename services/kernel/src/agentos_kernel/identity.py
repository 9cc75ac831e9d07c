"""Event identity for consumers: the CloudEvent ``id`` names one fact, whatever NATS headers say.

JetStream's ``Nats-Msg-Id`` de-duplication holds only for publishers that set the header and
only inside the stream's duplicate window (120 s). A copy of an event stored later (a webhook
redelivered after the gateway's replay window, a re-sent result, a raw publish without the
header) would otherwise run every handler again. So each durable consumer *claims* the ids it
handles in the ``AGENTOS_EVENT_IDS`` key-value bucket before running the handler. The key is
``<durable>.<sha256 of the id>``, the value the claiming message's stream sequence and a digest
of the event's content (type, source, tenant, subject and data; not its time or trace):

- no claim yet: the message claims the id and is handled;
- claimed by the same stream message (a redelivery): handled again, as before;
- claimed by another message with the same content: a copy, acknowledged and not handled;
- claimed by another message with other content: the id is reused for a different fact, and the
  message is dead-lettered (``event_id_reused``) with the first message's stream sequence.

A claim lasts ``event_ids_ttl_s`` (the bucket's TTL). When a consumer dead-letters an event it
could not handle, it releases the claim, so a later copy (a replay of the dead letter) runs.
Replicas of a service share a durable, hence its claims.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from agentos_schemas import Event, codec
from nats.js import api

from agentos_kernel.replies import pub_ack

if TYPE_CHECKING:
    from agentos_kernel.bus import Bus

BUCKET = "AGENTOS_EVENT_IDS"
STREAM = f"KV_{BUCKET}"
_WRONG_LAST_SEQUENCE = 10071
_DELETED = ("DEL", "PURGE")


class Seen(enum.Enum):
    """What a consumer's claim on an event id says about one message."""

    NEW = "new"
    """First time this consumer sees the id (or a redelivery of the message that claimed it)."""
    COPY = "copy"
    """Another message already claimed the id with the same content."""
    REUSED = "reused"
    """Another message already claimed the id with different content."""


def digest(event: Event[Any]) -> str:
    """What makes two messages with one id the same fact (not when or by which trace it was sent)."""
    h = hashlib.sha256()
    for part in (event.type, event.source, event.tenant, event.subject or ""):
        h.update(part.encode())
        h.update(b"\x1f")
    h.update(codec.data_bytes(event.data))
    return h.hexdigest()[:32]


async def open_bucket(js: Any, *, ttl_s: float, replicas: int = 1) -> None:
    """Create the bucket if it is missing (claims expire after ``ttl_s``)."""
    try:
        await js.key_value(BUCKET)
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
        config = api.KeyValueConfig(
            bucket=BUCKET,
            history=1,
            ttl=ttl_s,
            replicas=replicas,
            storage=api.StorageType.FILE,
            direct=True,
            description="Event ids each durable consumer has handled (content digests)",
        )
        with contextlib.suppress(nats.js.errors.BadRequestError):  # another process created it meanwhile
            await js.create_key_value(config)


class Claims:
    """One durable consumer's claims (see the module docs)."""

    def __init__(self, bus: Bus, durable: str) -> None:
        self.bus = bus
        self.durable = durable
        self._prefix = getattr(bus.js, "_prefix", api.DEFAULT_PREFIX)

    def subject(self, event_id: str) -> str:
        return f"$KV.{BUCKET}.{self.durable}.{hashlib.sha256(event_id.encode()).hexdigest()[:40]}"

    async def claim(self, event: Event[Any], stream_seq: int) -> tuple[Seen, int]:
        """(what this message is, the stream sequence of the message that claimed the id)."""
        subject = self.subject(event.id)
        mine = digest(event)
        value = f"{stream_seq} {mine}".encode()
        expected = 0
        for _ in range(4):  # a claim released or taken meanwhile: look again
            if await self._put(subject, value, expected):
                return Seen.NEW, stream_seq
            found = await self._get(subject)
            if found is None:
                expected = 0
                continue
            kv_seq, first = found
            if first is None:  # released: claim it over the delete marker
                expected = kv_seq
                continue
            first_seq, first_digest = first
            if first_seq == stream_seq:
                return Seen.NEW, stream_seq
            return (Seen.COPY if first_digest == mine else Seen.REUSED), first_seq
        raise nats.errors.Error(f"could not claim event {event.id!r}: its claim keeps changing")

    async def release(self, event: Event[Any]) -> None:
        """Forget the claim (the event was dead-lettered unhandled), so a later copy runs."""
        pub_ack(await (await self.bus.replies.publish(self.subject(event.id), b"", {"KV-Operation": "DEL"})))

    async def _put(self, subject: str, value: bytes, expected: int) -> bool:
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expected)}
        reply = await (await self.bus.replies.publish(subject, value, headers))
        try:
            pub_ack(reply)
        except nats.js.errors.APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                return False
            raise
        return True

    async def _get(self, subject: str) -> tuple[int, tuple[int, str] | None] | None:
        """(the key's last message sequence, (claiming stream seq, digest) or None if released),
        or None if the key has no message."""
        msg = await (await self.bus.replies.request(f"{self._prefix}.DIRECT.GET.{STREAM}.{subject}"))
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status:
            raise nats.js.errors.APIError(code=int(status), description=headers.get("Description"))
        kv_seq = int(headers.get("Nats-Sequence", "0"))
        if headers.get("KV-Operation") in _DELETED or not msg.data:
            return kv_seq, None
        first_seq, _, first_digest = msg.data.decode().partition(" ")
        return kv_seq, (int(first_seq), first_digest)
