"""Crypto-shredding: personal fields sealed with per-data-subject keys that erasure destroys.

The log is immutable, so personal data the business needs (a customer's name, what they wrote)
is never stored in clear: the payload fields the catalogue marks ``PERSONAL``
(:mod:`agentos_schemas.personal`) are encrypted on publish with the key of the event's data
subject (the field marked ``DATA_SUBJECT``, scoped by tenant), and decrypted on decode.
``agentos audit erase`` destroys the key: every stored copy of those fields — in the stream, the
claim-check store, the audit projection and its exports — becomes unreadable, while the stored
bytes, and so the hash chain, do not change.

* **Cipher** (:mod:`agentos_kernel.sealing`): AES-256-GCM (``cryptography``), a fresh 96-bit
  nonce per field, and the key name and revision, event type and field name as associated data
  (a token cannot be moved to another field or event type). A field becomes
  ``agentos-enc:v1:<key name>.<revision>:<base64url>``.
* **Keys**: one per (tenant, subject) in the JetStream key-value bucket ``AGENTOS_SUBJECT_KEYS``
  (history 1), named by ``sha256(tenant \\0 subject)[:32]`` so the bucket names nobody. The
  revision (the KV sequence of the put) is in every token: a key created again after an erasure
  is a new revision and can never open the erased tokens.
* **Erasure** overwrites the key's message in the bucket's stream (JetStream's secure message
  delete, which writes random bytes over it; the bucket's stream is created with deletes
  allowed for this) and then purges the key, leaving a purge marker. Every process watches the
  bucket (headers only, new messages only) and forgets an erased key at once.
* **Reading**: a field whose key is gone, or which does not open under it, reads as ``[ERASED]``;
  a consumer never fails on it. A key store that does not answer raises
  :class:`~agentos_kernel.exceptions.BusUnavailable` (the consumer redelivers later) rather than
  pretend the data was erased.

Events without personal fields cost one dict lookup by type on publish and on decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from agentos_schemas import Event
from agentos_schemas.personal import ERASED, PersonalPlan, is_token, parse_token, personal_plan
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from agentos_kernel.exceptions import BusUnavailable, Failed
from agentos_kernel.faults import contained
from agentos_kernel.sealing import open_value, seal_value

log = logging.getLogger("agentos.shred")

KEYS_BUCKET = "AGENTOS_SUBJECT_KEYS"
KEYS_STREAM = f"KV_{KEYS_BUCKET}"
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


class ShredError(Failed):
    """Personal fields could not be sealed (no key ready for the data subject)."""

    code = "shred_failed"


# -- the catalogue's personal fields ------------------------------------------------------------
_plans: dict[str, PersonalPlan] = {}
_plans_of = -1


def plan_for(type_: str) -> PersonalPlan | None:
    """The personal fields of an event type (None for most types): one dict lookup."""
    global _plans_of
    from agentos_schemas.events import CATALOGUE

    if _plans_of != len(CATALOGUE):  # built once (again if a type was registered since)
        _plans.clear()
        _plans.update({t: p for t, cls in CATALOGUE.items() if (p := personal_plan(cls)) is not None})
        _plans_of = len(CATALOGUE)
    return _plans.get(type_)


@functools.lru_cache(maxsize=65536)
def key_name(tenant: str, subject: str) -> str:
    """The key-store name of a data subject: 32 hex digits, naming nobody."""
    return hashlib.sha256(f"{tenant}\x00{subject}".encode()).hexdigest()[:32]


def subject_of(event: Event[Any], plan: PersonalPlan) -> str:
    """The data subject of an event: its data-subject field, or (when that is empty) the event
    itself, ``event:<id>``, so the fields can still be erased, one event at a time."""
    value = getattr(event.data, plan.subject_field, None) if plan.subject_field else None
    return str(value) if value else f"event:{event.id}"


@dataclass(frozen=True)
class Erasure:
    """What :meth:`SubjectKeys.erase` destroyed: the key name and its revision (0: none existed)."""

    key: str
    revision: int


class SubjectKeys:
    """The per-subject keys of one process: the KV bucket, a cache, and a watch that evicts."""

    def __init__(self, js: JetStreamContext, *, replicas: int = 1) -> None:
        self.js, self.replicas = js, replicas
        self._kv: KeyValue | None = None
        self._cache: dict[str, tuple[int, AESGCM] | None] = {}
        """name -> (revision, cipher); None: erased (a purge marker was seen)."""
        self._flights: dict[str, asyncio.Future[tuple[int, AESGCM]]] = {}
        self._watch: Any = None
        self._lock = asyncio.Lock()

    async def bucket(self) -> KeyValue:
        """Open the bucket, creating its stream (deletes allowed, for secure erasure) if missing."""
        if self._kv is not None:
            return self._kv
        async with self._lock:
            if self._kv is None:
                try:
                    await self.js.stream_info(KEYS_STREAM)
                except nats.js.errors.NotFoundError:
                    with contextlib.suppress(nats.js.errors.BadRequestError):  # created meanwhile
                        await self.js.add_stream(self._stream_config())
                except _TRANSIENT as exc:
                    raise BusUnavailable(f"the subject key store does not answer: {exc!r}") from None
                kv = await self.js.key_value(KEYS_BUCKET)
                await self._start_watch()
                self._kv = kv
        return self._kv

    def _stream_config(self) -> api.StreamConfig:
        # What nats-py's create_key_value makes for history 1, except deny_delete: erasure
        # overwrites the key's message with JetStream's secure delete before purging it.
        return api.StreamConfig(
            name=KEYS_STREAM,
            description="AgentOS per-data-subject keys (crypto-shredding)",
            subjects=[f"$KV.{KEYS_BUCKET}.>"],
            allow_direct=True,
            allow_rollup_hdrs=True,
            deny_delete=False,
            deny_purge=False,
            discard=api.DiscardPolicy.NEW,
            duplicate_window=120,
            max_msgs_per_subject=1,
            max_msgs=-1,
            max_consumers=-1,
            num_replicas=self.replicas,
            storage=api.StorageType.FILE,
        )

    async def _start_watch(self) -> None:
        prefix = f"$KV.{KEYS_BUCKET}."

        async def on_change(msg: Any) -> None:
            name = msg.subject[len(prefix) :]
            op = (msg.headers or {}).get(KV_OP)
            if op in (KV_DEL, KV_PURGE):
                self._cache[name] = None
            else:  # a key created (again): read it when next needed — unless it is the very
                # revision this process already holds (its own create, heard back)
                held = self._cache.get(name)
                try:
                    revision = msg.metadata.sequence.stream
                except (nats.errors.Error, ValueError, IndexError, OverflowError, OSError):
                    revision = None  # no JetStream metadata, or none that parses: be safe, forget it
                if held is None or revision is None or held[0] != revision:
                    self._cache.pop(name, None)

        self._watch = await self.js.subscribe(
            f"{prefix}>",
            stream=KEYS_STREAM,
            cb=on_change,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
            headers_only=True,
            inactive_threshold=300.0,
        )

    async def _read(self, name: str) -> tuple[int, AESGCM] | None:
        kv = await self.bucket()
        try:
            entry = await kv.get(name)
        except nats.js.errors.KeyNotFoundError as exc:
            if getattr(exc, "op", None) in (KV_DEL, KV_PURGE):
                self._cache[name] = None  # erased: final for this revision
            return None
        except _TRANSIENT as exc:
            raise BusUnavailable(f"the subject key store does not answer: {exc!r}") from None
        if entry.revision is None:  # nats-py types it optional; an entry read from the stream has one
            raise ShredError(f"the subject key store returned key {name} without a revision")
        key = (entry.revision, AESGCM(bytes(entry.value or b"")))
        self._cache[name] = key
        return key

    async def current(self, name: str) -> tuple[int, AESGCM] | None:
        """The live key of a name (None when erased or never created)."""
        if name in self._cache:
            return self._cache[name]
        return await self._read(name)

    async def for_sealing(self, name: str) -> tuple[int, AESGCM]:
        """The live key of a name, created if there is none (a first event, or after an erasure).

        Concurrent callers for the same name share one lookup (a burst of events from a new
        data subject makes one KV read and at most one create, not one each)."""
        key = self._cache.get(name)
        if key is not None:
            return key
        flight = self._flights.get(name)
        if flight is None:
            flight = asyncio.ensure_future(self._live_or_created(name))
            self._flights[name] = flight
            flight.add_done_callback(lambda _, name=name: self._flights.pop(name, None))
        return await asyncio.shield(flight)  # one caller cancelled does not cancel the others

    async def _live_or_created(self, name: str) -> tuple[int, AESGCM]:
        key = await self.current(name)
        for _ in range(5):
            if key is not None:
                return key
            kv = await self.bucket()
            try:
                await kv.create(name, AESGCM.generate_key(bit_length=256))
            except nats.js.errors.KeyWrongLastSequenceError:
                pass  # another process created it first: read theirs
            except _TRANSIENT as exc:
                raise BusUnavailable(f"the subject key store does not answer: {exc!r}") from None
            # Read it back without first dropping what the cache holds: another request may be
            # between its own ready() and seal() on this very key.
            key = await self._read(name)
        raise ShredError(f"could not create the key {name} for a data subject")

    def cached(self, name: str) -> tuple[int, AESGCM]:
        found = self._cache.get(name)
        if found is None:
            raise ShredError(f"no key ready for data subject key {name}: publish through Bus.publish")
        return found

    async def erase(self, tenant: str, subject: str) -> Erasure:
        """Destroy a data subject's key: overwrite its stored message, then purge the key."""
        name = key_name(tenant, subject)
        kv = await self.bucket()
        revision = 0
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            revision = (await kv.get(name)).revision or 0
        if revision:
            try:  # JetStream's secure delete: the message is overwritten with random bytes
                await self.js.delete_msg(KEYS_STREAM, revision)
            except nats.js.errors.APIError as exc:
                log.warning("secure delete of key %s refused (%s); purging it", name, exc)
        await kv.purge(name)
        self._cache[name] = None
        return Erasure(name, revision)

    async def close(self) -> None:
        if self._watch is not None:
            with contained("unsubscribe the subject keys' watch on close", nats.errors.Error):
                await self._watch.unsubscribe()
            self._watch = None


class Shredder:
    """The bus's hooks: :meth:`ready` before publishing, :meth:`seal` on the payload bytes,
    :meth:`open` after decoding."""

    def __init__(self, keys: SubjectKeys) -> None:
        self.keys = keys

    def missing(self, event: Event[Any], plan: PersonalPlan) -> str | None:
        """The key name to fetch (or create) before this event can be sealed; None when its
        key is already in this process or it has nothing to seal (empty personal fields cost no key)."""
        if not any(
            isinstance(value := getattr(event.data, f, None), str) and value and not is_token(value)
            for f in plan.fields
        ):
            return None
        name = key_name(event.tenant, subject_of(event, plan))
        return None if self.keys._cache.get(name) is not None else name

    async def ready(self, event: Event[Any], plan: PersonalPlan) -> None:
        """Make sure the event's data subject has a key in this process (created if needed)."""
        name = self.missing(event, plan)
        if name is not None:
            await self.keys.for_sealing(name)

    async def ready_all(self, events: list[Event[Any]]) -> None:
        """:meth:`ready` for many events: each missing key fetched once, all of them together."""
        names = {
            name
            for e in events
            if (plan := plan_for(e.type)) is not None and (name := self.missing(e, plan)) is not None
        }
        if len(names) == 1:
            await self.keys.for_sealing(names.pop())
        elif names:
            await asyncio.gather(*(self.keys.for_sealing(n) for n in names))

    def seal(self, event: Event[Any], raw: bytes, plan: PersonalPlan) -> bytes:
        """The payload bytes with every non-empty personal field encrypted (after redaction)."""
        name = key_name(event.tenant, subject_of(event, plan))
        data = msgspec.json.decode(raw)
        key: tuple[int, AESGCM] | None = None
        for field in plan.fields:
            value = data.get(field)
            if isinstance(value, str) and value and not is_token(value):
                key = key or self.keys.cached(name)
                data[field] = seal_value(value, name, key[0], key[1], event.type, field)
        return msgspec.json.encode(data) if key is not None else raw

    async def open(self, event: Event[Any], plan: PersonalPlan) -> Event[Any]:
        """The event with its personal fields decrypted, or ``[ERASED]`` where the key is gone."""
        update: dict[str, str] = {}
        for field in plan.fields:
            value = getattr(event.data, field, None)
            if not isinstance(value, str) or not is_token(value):
                continue
            parsed = parse_token(value)
            key = await self.keys.current(parsed[0]) if parsed is not None else None
            update[field] = open_value(value, key, event.type, field)
        if update:
            event.data = event.data.model_copy(update=update)
        return event


async def erase(js: JetStreamContext, tenant: str, subject: str, *, replicas: int = 1) -> Erasure:
    """Destroy a data subject's key (see :meth:`SubjectKeys.erase`) with a key store of its own."""
    keys = SubjectKeys(js, replicas=replicas)
    try:
        return await keys.erase(tenant, subject)
    finally:
        await keys.close()


__all__ = [
    "ERASED",
    "KEYS_BUCKET",
    "KEYS_STREAM",
    "Erasure",
    "ShredError",
    "Shredder",
    "SubjectKeys",
    "erase",
    "key_name",
    "open_value",
    "plan_for",
    "seal_value",
    "subject_of",
]
