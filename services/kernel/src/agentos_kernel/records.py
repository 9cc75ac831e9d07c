"""Business records (tickets, orders, customers …) that agents change, with no silent overwrites.

Each record is one key ``<kind>.<id>`` in the NATS key-value bucket ``AGENTOS_RECORDS``. Writes are
*expected-version* writes: the writer names the revision it read, the server refuses the write if
the record moved on since (``kv.update(key, value, last=revision)``), and the loser gets a
:class:`RecordConflict` that says who changed it — so an agent re-reads and re-plans instead of
clobbering another agent's work. For longer pieces of work a :class:`Lease` (``lease.<kind>.<id>``,
also revision-checked, with an expiry) gives one holder the record until it releases it or the
lease runs out.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors
from nats.js import api

from agentos_kernel.exceptions import AgentOSError, ConfigError

RECORDS_BUCKET = "AGENTOS_RECORDS"
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ID = re.compile(r"^[-_=a-zA-Z0-9]{1,200}$")


class RecordConflict(AgentOSError):
    """Someone else changed (or created) the record since the revision this writer read."""

    code = "conflict"
    http_status = 409
    exit_code = 1

    def __init__(self, key: str, expected: int, current: Record | None) -> None:
        now = f"revision {current.revision} by {current.by or 'unknown'}" if current else "deleted"
        super().__init__(
            f"record {key} changed since revision {expected} (now {now}): re-read it and re-plan; nothing was written"
        )
        self.key, self.expected, self.current = key, expected, current


class LeaseHeld(AgentOSError):
    """Another holder has a live lease on the record."""

    code = "lease_held"
    http_status = 409
    exit_code = 1

    def __init__(self, key: str, holder: str, expires: float) -> None:
        super().__init__(f"record {key} is leased to {holder} for {max(expires - time.time(), 0):.0f}s more")
        self.key, self.holder, self.expires = key, holder, expires


@dataclass(frozen=True)
class Record:
    """One version of a record."""

    kind: str
    id: str
    data: dict[str, Any] = field(default_factory=dict)
    revision: int = 0
    by: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class Lease:
    """A holder's claim on a record until ``expires`` (epoch seconds)."""

    kind: str
    id: str
    holder: str
    expires: float
    revision: int


def record_key(kind: str, id: str) -> str:
    """``<kind>.<id>``; ids may use letters, digits, ``-``, ``_`` and ``=``."""
    if not _KIND.match(kind):
        raise ConfigError(f"record kind {kind!r} must match {_KIND.pattern}")
    if not _ID.match(id):
        raise ConfigError(f"record id {id!r} must match {_ID.pattern}")
    return f"{kind}.{id}"


def _wrong_revision(exc: Exception) -> bool:
    return isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or getattr(exc, "err_code", None) == 10071


class Records:
    """Revision-checked reads, writes and leases on ``AGENTOS_RECORDS``."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: Any, *, create: bool = True, replicas: int = 1) -> Records:
        """The records store (the bucket is created if missing and ``create``)."""
        try:
            return cls(await js.key_value(RECORDS_BUCKET))
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
            if not create:
                raise
        with contextlib.suppress(nats.js.errors.BadRequestError):
            return cls(
                await js.create_key_value(
                    api.KeyValueConfig(
                        bucket=RECORDS_BUCKET,
                        history=8,
                        replicas=replicas,
                        description="AgentOS business records, written with expected revisions",
                    )
                )
            )
        return cls(await js.key_value(RECORDS_BUCKET))

    async def read(self, kind: str, id: str) -> Record | None:
        """The current version, or None if there is none."""
        try:
            entry = await self.kv.get(record_key(kind, id))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if entry is None or not entry.value:
            return None
        doc = json.loads(entry.value)
        return Record(kind, id, doc.get("data", {}), entry.revision, doc.get("by", ""), doc.get("at", 0.0))

    async def write(self, kind: str, id: str, data: dict[str, Any], *, expected_revision: int, by: str) -> Record:
        """Write a new version if the record is still at ``expected_revision`` (0: it must not exist).

        Raises :class:`RecordConflict` (and writes nothing) otherwise.
        """
        key = record_key(kind, id)
        body = json.dumps({"data": data, "by": by, "at": time.time()}).encode()
        try:
            if expected_revision == 0:
                revision = await self.kv.create(key, body)
            else:
                revision = await self.kv.update(key, body, last=expected_revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as exc:
            if not _wrong_revision(exc):
                raise
            raise RecordConflict(key, expected_revision, await self.read(kind, id)) from None
        return Record(kind, id, data, revision, by, time.time())

    # -- leases -----------------------------------------------------------------------------------
    async def acquire(self, kind: str, id: str, holder: str, ttl_s: float = 60.0) -> Lease:
        """Take the lease (or renew one this holder has, or take over an expired one)."""
        key = "lease." + record_key(kind, id)
        expires = time.time() + ttl_s
        body = json.dumps({"holder": holder, "expires": expires}).encode()
        try:
            return Lease(kind, id, holder, expires, await self.kv.create(key, body))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as exc:
            if not _wrong_revision(exc):
                raise
        entry = await self.kv.get(key)
        doc = json.loads(entry.value or b"{}")
        if doc.get("holder") not in (None, holder) and float(doc.get("expires", 0)) > time.time():
            raise LeaseHeld(key, doc["holder"], float(doc["expires"]))
        try:
            return Lease(kind, id, holder, expires, await self.kv.update(key, body, last=entry.revision))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as exc:
            if not _wrong_revision(exc):
                raise
            raise LeaseHeld(key, "another holder (taken just now)", expires) from None

    async def release(self, lease: Lease) -> bool:
        """Give the lease back; False if it had already been taken over."""
        key = "lease." + record_key(lease.kind, lease.id)
        try:
            await self.kv.delete(key, last=lease.revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as exc:
            if not _wrong_revision(exc):
                raise
            return False
        return True

    @contextlib.asynccontextmanager
    async def leased(self, kind: str, id: str, holder: str, ttl_s: float = 60.0) -> AsyncIterator[Lease]:
        """``async with records.leased("order", "o-1", "agent:refunds"):`` — held for the block."""
        lease = await self.acquire(kind, id, holder, ttl_s)
        try:
            yield lease
        finally:
            await self.release(lease)
